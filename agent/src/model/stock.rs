//! candle-transformers' stock DistilBERT, the baseline fleetbench measures
//! its own forward against.

use std::fmt;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::distilbert::{Config, DistilBertModel};

use super::config::DistilBertConfig;
use super::engine::{ClassifierHead, Numerics};
use super::weights::Checkpoint;

pub(crate) struct StockModel {
    model: DistilBertModel,
    head: ClassifierHead,
}

impl fmt::Debug for StockModel {
    // DistilBertModel has no Debug of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StockModel")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl StockModel {
    /// f32 only: the stock module computes its attention in f32 regardless.
    pub(crate) fn load(ck: &Checkpoint, cfg: &DistilBertConfig, device: &Device) -> Result<Self> {
        let config: Config = serde_json::from_value(cfg.to_candle_transformers_json())
            .map_err(|e| candle_core::Error::Msg(format!("candle-transformers config: {e}")))?;
        let mut tensors = std::collections::HashMap::with_capacity(ck.len());
        for (name, t) in ck {
            if name.starts_with("distilbert.") {
                tensors.insert(name.clone(), t.to_dtype(DType::F32)?.to_device(device)?);
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = DistilBertModel::load(vb.pp("distilbert"), &config)?;
        let head = ClassifierHead::load(ck, Numerics::Uniform(DType::F32), device)?;
        Ok(StockModel { model, head })
    }

    /// Same contract as the fleetbench engine: HF mask (b, s), 1 = attend.
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s) = ids.dims2()?;
        // The stock module masks where its mask is *true* (masked_fill with
        // -inf), the opposite polarity of HF's attention_mask; it broadcasts
        // the mask to the (b, heads, s, s) scores.
        let stock_mask = mask.eq(0u32)?.reshape((b, 1, 1, s))?;
        let hidden = self.model.forward(ids, &stock_mask)?;
        self.head.forward(&hidden)
    }
}
