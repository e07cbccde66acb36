//! Which CUDA device is which NVML device.
//!
//! NVML numbers GPUs in PCI order and sees them all; CUDA numbers only the
//! devices `CUDA_VISIBLE_DEVICES` lets it see, in the order that variable
//! lists them, and when it is unset in the order `CUDA_DEVICE_ORDER` asks for
//! (fastest first by default). Slurm and the Kubernetes device plugin set
//! `CUDA_VISIBLE_DEVICES`, so "CUDA ordinal = NVML index" describes the wrong
//! GPU or an ordinal that does not exist.
//!
//! Two answers, of different strength:
//! - [`match_cuda_uuids`] is the authority: the UUIDs CUDA itself reports
//!   (`cuDeviceGetUuid_v2`, which gives a MIG instance's own UUID) matched to
//!   the UUIDs NVML reports. Use it whenever CUDA is initialised.
//! - [`expected_visible`] is a prediction from the environment, for when CUDA
//!   is not available (a CPU build's `info`, a driver too old to start CUDA).
//!   Its fastest-first order approximates a heuristic CUDA does not document.
//!
//! Nothing here does I/O except [`VisibleDevices::from_env`] and
//! [`DeviceOrder::from_env`].

use std::cmp::Ordering;
use std::fmt;

use fleetbench_common::GpuInfo;

/// The variable that selects and orders the devices CUDA enumerates.
pub const VISIBLE_DEVICES_VAR: &str = "CUDA_VISIBLE_DEVICES";
/// The variable that chooses CUDA's enumeration order.
pub const DEVICE_ORDER_VAR: &str = "CUDA_DEVICE_ORDER";

/// The order CUDA enumerates devices in before `CUDA_VISIBLE_DEVICES` picks
/// among them (its indices count in this order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceOrder {
    /// CUDA's default: the fastest device first, by a heuristic CUDA does not
    /// document.
    #[default]
    FastestFirst,
    /// PCI bus id order: the order of NVML and `nvidia-smi`.
    PciBusId,
}

impl DeviceOrder {
    /// The value of `CUDA_DEVICE_ORDER`: `PCI_BUS_ID` selects PCI order; unset
    /// or any other value leaves CUDA's default, fastest first.
    pub fn parse(value: Option<&str>) -> DeviceOrder {
        match value.map(str::trim) {
            Some("PCI_BUS_ID") => DeviceOrder::PciBusId,
            _ => DeviceOrder::FastestFirst,
        }
    }

    /// This process's `CUDA_DEVICE_ORDER`.
    pub fn from_env() -> DeviceOrder {
        DeviceOrder::parse(std::env::var(DEVICE_ORDER_VAR).ok().as_deref())
    }

    /// The variable's value for this order.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceOrder::FastestFirst => "FASTEST_FIRST",
            DeviceOrder::PciBusId => "PCI_BUS_ID",
        }
    }
}

/// One entry of `CUDA_VISIBLE_DEVICES`, as written (resolved against the
/// host's GPUs by [`resolve_visible`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VisibleEntry {
    /// A position in CUDA's enumeration of every device, in [`DeviceOrder`].
    Index(u32),
    /// `GPU-<uuid>` or a prefix of it unique on the host; kept without the
    /// `GPU-` prefix, lower-case.
    GpuUuid(String),
    /// `MIG-<uuid>` (drivers R470 and later) or a unique prefix; kept without
    /// the `MIG-` prefix, lower-case.
    MigUuid(String),
    /// The legacy MIG form `MIG-GPU-<uuid>/<gpu instance>/<compute instance>`
    /// (CUDA 11.0 to 11.3 drivers); the GPU UUID without its prefix, lower-case.
    LegacyMig {
        gpu_uuid: String,
        gpu_instance: u32,
        compute_instance: u32,
    },
}

impl fmt::Display for VisibleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VisibleEntry::Index(i) => write!(f, "{i}"),
            VisibleEntry::GpuUuid(u) => write!(f, "GPU-{u}"),
            VisibleEntry::MigUuid(u) => write!(f, "MIG-{u}"),
            VisibleEntry::LegacyMig {
                gpu_uuid,
                gpu_instance,
                compute_instance,
            } => write!(f, "MIG-GPU-{gpu_uuid}/{gpu_instance}/{compute_instance}"),
        }
    }
}

/// Where CUDA stops reading `CUDA_VISIBLE_DEVICES`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListStop {
    /// CUDA reads the list up to its first entry it cannot use and ignores
    /// that entry and every one after it (CUDA Programming Guide, "CUDA
    /// Environment Variables": `0,2,-1,1` makes devices 0 and 2 visible).
    #[error(
        "CUDA_VISIBLE_DEVICES entry \"{entry}\" {reason}: CUDA ignores it and every entry after it"
    )]
    Invalid { entry: String, reason: InvalidEntry },
    /// A device named twice makes CUDA see no device at all (observed on
    /// drivers since R510 and modelled the same way by PyTorch).
    #[error("CUDA_VISIBLE_DEVICES names {entry} twice: CUDA then sees no GPU at all")]
    Repeated { entry: String },
}

/// Why CUDA cannot use an entry of `CUDA_VISIBLE_DEVICES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidEntry {
    /// Neither a non-negative number nor a `GPU-`/`MIG-` id (`-1`, `NoDevFiles`).
    NotADevice,
    /// A number past the last device.
    IndexOutOfRange { devices: usize },
    /// A list's kind is set by its first entry (indices, `GPU-` or `MIG-`
    /// ids); an entry of another kind ends it.
    OtherKind,
    /// No GPU or MIG instance here has a UUID starting so.
    UnknownUuid,
    /// More than one device here has a UUID starting so.
    AmbiguousUuid { matches: usize },
    /// A legacy MIG entry's GPU has several instances and NVML's UUIDs do
    /// not say which one it names: not invalid to CUDA, but beyond this
    /// prediction (see [`match_cuda_uuids`] for the authority).
    UndecidableMigInstance { instances: usize },
}

impl fmt::Display for InvalidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidEntry::NotADevice => write!(f, "is not a device index or UUID"),
            InvalidEntry::IndexOutOfRange { devices } => {
                write!(f, "is past the last of the {devices} CUDA device(s) here")
            }
            InvalidEntry::OtherKind => {
                write!(f, "is of another kind than the list's first entry")
            }
            InvalidEntry::UnknownUuid => write!(f, "matches no GPU UUID on this host"),
            InvalidEntry::AmbiguousUuid { matches } => {
                write!(f, "is the start of {matches} UUIDs on this host")
            }
            InvalidEntry::UndecidableMigInstance { instances } => write!(
                f,
                "names one of its GPU's {instances} MIG instances by ids NVML does not report"
            ),
        }
    }
}

/// `CUDA_VISIBLE_DEVICES` as CUDA reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VisibleDevices {
    /// Unset: every device, in [`DeviceOrder`].
    All,
    /// Set: these entries in this order; none (the empty string, or an
    /// invalid first entry) means no GPU is visible. `stop` says where and
    /// why CUDA stopped reading, when it did.
    Listed {
        entries: Vec<VisibleEntry>,
        stop: Option<ListStop>,
    },
}

/// The kind of a list, set by its first entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Indices,
    GpuUuids,
    MigUuids,
}

impl VisibleDevices {
    /// Reads the variable's value; `None` is unset.
    ///
    /// The rules follow CUDA as documented (comma-separated indices or UUIDs,
    /// unique UUID prefixes, the first invalid entry ends the list, the empty
    /// string shows nothing) and, where the documentation is silent, as
    /// PyTorch's parser models the driver (`torch.cuda._parse_visible_devices`):
    /// - the first entry sets the list's kind; an entry of another kind ends it;
    /// - an index is read like C's `strtoul`: leading blanks and one sign are
    ///   allowed and anything after the digits is ignored (`1gpu` is 1, `-0`
    ///   is 0, `-1` ends the list);
    /// - an entry that repeats an earlier one leaves no device visible.
    ///
    /// Blanks around UUID entries are also ignored (an assumption: CUDA's
    /// handling of them is not documented).
    pub fn parse(value: Option<&str>) -> VisibleDevices {
        let Some(value) = value else {
            return VisibleDevices::All;
        };
        let mut entries = Vec::new();
        if value.trim().is_empty() {
            return VisibleDevices::Listed {
                entries,
                stop: None,
            };
        }
        let mut kind = None;
        for raw in value.split(',') {
            let text = raw.trim();
            let entry = parse_entry(text);
            let entry_kind = match &entry {
                Some(VisibleEntry::Index(_)) => Some(ListKind::Indices),
                Some(VisibleEntry::GpuUuid(_)) => Some(ListKind::GpuUuids),
                Some(VisibleEntry::MigUuid(_) | VisibleEntry::LegacyMig { .. }) => {
                    Some(ListKind::MigUuids)
                }
                None => None,
            };
            let reason = match (entry_kind, kind) {
                (Some(k), Some(list)) if k != list => Some(InvalidEntry::OtherKind),
                (None, _) => Some(InvalidEntry::NotADevice),
                _ => None,
            };
            if let Some(reason) = reason {
                return VisibleDevices::Listed {
                    entries,
                    stop: Some(ListStop::Invalid {
                        entry: text.to_string(),
                        reason,
                    }),
                };
            }
            let Some(entry) = entry else {
                unreachable!("an entry that did not parse stopped the list above")
            };
            kind = entry_kind;
            if entries.contains(&entry) {
                return VisibleDevices::Listed {
                    entries: Vec::new(),
                    stop: Some(ListStop::Repeated {
                        entry: text.to_string(),
                    }),
                };
            }
            entries.push(entry);
        }
        VisibleDevices::Listed {
            entries,
            stop: None,
        }
    }

    /// This process's `CUDA_VISIBLE_DEVICES`. A value that is not UTF-8
    /// counts as unset.
    pub fn from_env() -> VisibleDevices {
        VisibleDevices::parse(std::env::var(VISIBLE_DEVICES_VAR).ok().as_deref())
    }
}

/// One entry, or `None` when CUDA cannot read it as a device.
fn parse_entry(text: &str) -> Option<VisibleEntry> {
    if let Some(rest) = text.strip_prefix("MIG-GPU-") {
        let mut parts = rest.split('/');
        let gpu_uuid = parts.next()?.to_ascii_lowercase();
        let gpu_instance = parts.next()?.trim().parse().ok()?;
        let compute_instance = parts.next()?.trim().parse().ok()?;
        if parts.next().is_some() || !is_uuid_text(&gpu_uuid) {
            return None;
        }
        return Some(VisibleEntry::LegacyMig {
            gpu_uuid,
            gpu_instance,
            compute_instance,
        });
    }
    if let Some(rest) = text.strip_prefix("MIG-") {
        return is_uuid_text(rest).then(|| VisibleEntry::MigUuid(rest.to_ascii_lowercase()));
    }
    if let Some(rest) = text.strip_prefix("GPU-") {
        return is_uuid_text(rest).then(|| VisibleEntry::GpuUuid(rest.to_ascii_lowercase()));
    }
    strtoul_index(text).map(VisibleEntry::Index)
}

/// Hex digits and dashes: a UUID or the start of one.
fn is_uuid_text(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// C's `strtoul` as CUDA applies it: blanks, one optional sign, digits, and
/// anything after them ignored; `None` for no digits, a negative number (it
/// would wrap to a huge index) or one too large for a device index.
fn strtoul_index(text: &str) -> Option<u32> {
    let text = text.trim_start();
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    if digits.is_empty() {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    match (negative, value) {
        (true, 0) => Some(0),
        (true, _) => None,
        (false, v) => u32::try_from(v).ok(),
    }
}

/// A GPU as NVML sees it: what device matching and ordering need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicalGpu {
    pub nvml_index: u32,
    /// `GPU-<uuid>` as NVML reports it.
    pub uuid: String,
    /// NVML's PCI bus id, e.g. `00000000:17:00.0`; empty when unknown.
    pub pci_bus_id: String,
    pub compute_capability: Option<(u32, u32)>,
    /// Streaming multiprocessors; NVML has no count for whole GPUs (its
    /// `num_cores` counts CUDA cores), so this is usually `None`.
    pub multiprocessors: Option<u32>,
    /// `MIG-<uuid>` of each MIG instance when MIG mode is on: CUDA then sees
    /// these instead of the GPU. (A GPU in MIG mode without an instance is
    /// invisible to CUDA: leave it out of the list given to the functions
    /// here; the probe reports it as limited.)
    pub mig_instances: Vec<String>,
}

impl PhysicalGpu {
    /// The facts an inventory carries.
    pub fn from_info(info: &GpuInfo) -> PhysicalGpu {
        PhysicalGpu {
            nvml_index: info.index,
            uuid: info.uuid.clone(),
            pci_bus_id: info.pci_bus_id.clone().unwrap_or_default(),
            compute_capability: info
                .compute_capability
                .as_deref()
                .and_then(parse_compute_capability),
            multiprocessors: None,
            mig_instances: info.mig_instances.clone(),
        }
    }

    /// The CUDA devices this GPU is: itself, or its MIG instances in MIG mode.
    fn cuda_devices(&self) -> Vec<VisibleGpu> {
        if !self.mig_instances.is_empty() {
            self.mig_instances
                .iter()
                .map(|uuid| self.instance(uuid))
                .collect()
        } else {
            vec![VisibleGpu {
                cuda_ordinal: 0,
                nvml_index: self.nvml_index,
                uuid: self.uuid.clone(),
                mig: false,
            }]
        }
    }
}

impl PhysicalGpu {
    /// One of this GPU's MIG instances as a CUDA device (ordinal set later).
    fn instance(&self, uuid: &str) -> VisibleGpu {
        VisibleGpu {
            cuda_ordinal: 0,
            nvml_index: self.nvml_index,
            uuid: uuid.to_string(),
            mig: true,
        }
    }
}

/// "8.0" -> (8, 0).
pub fn parse_compute_capability(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A device CUDA sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisibleGpu {
    /// This process's CUDA ordinal for it (`Device::new_cuda(ordinal)`).
    pub cuda_ordinal: u32,
    /// NVML index of the GPU (of the parent GPU for a MIG instance).
    pub nvml_index: u32,
    /// `GPU-<uuid>`, or `MIG-<uuid>` for a MIG instance.
    pub uuid: String,
    pub mig: bool,
}

/// The prediction with where CUDA stopped reading the list, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub visible: Vec<VisibleGpu>,
    pub stop: Option<ListStop>,
}

/// The devices CUDA should show this process, in ordinal order (see
/// [`resolve_visible`]).
pub fn expected_visible(
    physical: &[PhysicalGpu],
    visible: &VisibleDevices,
    order: DeviceOrder,
) -> Vec<VisibleGpu> {
    resolve_visible(physical, visible, order).visible
}

/// Predicts CUDA's devices from NVML's GPUs and the environment.
///
/// CUDA's enumeration of every device comes first: with `PCI_BUS_ID`, NVML's
/// GPUs sorted by bus id; with `FASTEST_FIRST`, CUDA's undocumented heuristic,
/// approximated here by higher compute capability, then more multiprocessors
/// (when known), then bus id. A GPU in MIG mode stands for its MIG instances
/// (drivers up to R525 enumerate only one instance per process, which this
/// does not model). `CUDA_VISIBLE_DEVICES` then picks from
/// that enumeration: indices count in it, UUIDs and unique UUID prefixes name
/// GPUs or MIG instances. This is a prediction: when CUDA is initialised, the
/// UUIDs it reports ([`match_cuda_uuids`]) are the authority.
pub fn resolve_visible(
    physical: &[PhysicalGpu],
    visible: &VisibleDevices,
    order: DeviceOrder,
) -> Resolution {
    let mut ordered: Vec<&PhysicalGpu> = physical.iter().collect();
    match order {
        DeviceOrder::PciBusId => ordered.sort_by(|a, b| pci_order(a, b)),
        DeviceOrder::FastestFirst => ordered.sort_by(|a, b| {
            // Unknown capabilities and counts sort after known ones.
            b.compute_capability
                .cmp(&a.compute_capability)
                .then(b.multiprocessors.cmp(&a.multiprocessors))
                .then_with(|| pci_order(a, b))
        }),
    }
    let enumeration: Vec<VisibleGpu> = ordered.iter().flat_map(|g| g.cuda_devices()).collect();
    let (entries, parse_stop) = match visible {
        VisibleDevices::All => {
            return Resolution {
                visible: numbered(enumeration),
                stop: None,
            };
        }
        VisibleDevices::Listed { entries, stop } => (entries, stop),
    };
    let mut chosen: Vec<VisibleGpu> = Vec::new();
    for entry in entries {
        let picked = match entry {
            VisibleEntry::Index(i) => enumeration
                .get(*i as usize)
                .cloned()
                .map(|g| vec![g])
                .ok_or(InvalidEntry::IndexOutOfRange {
                    devices: enumeration.len(),
                }),
            VisibleEntry::GpuUuid(prefix) => unique_by_prefix(
                physical.iter().map(|g| (g, g.uuid.as_str())),
                prefix,
                "GPU-",
            )
            .map(PhysicalGpu::cuda_devices),
            VisibleEntry::MigUuid(prefix) => {
                let instances = physical.iter().flat_map(|g| {
                    g.mig_instances
                        .iter()
                        .map(move |uuid| ((g, uuid.as_str()), uuid.as_str()))
                });
                unique_by_prefix(instances, prefix, "MIG-").map(|(g, uuid)| vec![g.instance(uuid)])
            }
            VisibleEntry::LegacyMig { gpu_uuid, .. } => {
                legacy_instance(physical, entry, gpu_uuid).map(|(g, uuid)| vec![g.instance(uuid)])
            }
        };
        match picked {
            Ok(devices) => {
                for device in devices {
                    if chosen.iter().any(|c| c.uuid == device.uuid) {
                        return Resolution {
                            visible: Vec::new(),
                            stop: Some(ListStop::Repeated {
                                entry: entry.to_string(),
                            }),
                        };
                    }
                    chosen.push(device);
                }
            }
            Err(reason) => {
                return Resolution {
                    visible: numbered(chosen),
                    stop: Some(ListStop::Invalid {
                        entry: entry.to_string(),
                        reason,
                    }),
                };
            }
        }
    }
    Resolution {
        visible: numbered(chosen),
        stop: parse_stop.clone(),
    }
}

/// The MIG instance a legacy `MIG-GPU-<uuid>/<gi>/<ci>` entry names. NVML
/// gives the instance's GPU and compute instance ids only through calls
/// this crate does not make, so the entry is resolved by the instance UUID
/// NVML reported in that same form (drivers before R470), or else as the
/// only instance of its GPU; several instances cannot be told apart and end
/// the prediction there.
fn legacy_instance<'a>(
    physical: &'a [PhysicalGpu],
    entry: &VisibleEntry,
    gpu_uuid: &str,
) -> Result<(&'a PhysicalGpu, &'a str), InvalidEntry> {
    let written = entry.to_string().to_ascii_lowercase();
    let same_text = physical.iter().find_map(|g| {
        g.mig_instances
            .iter()
            .find(|uuid| uuid.to_ascii_lowercase() == written)
            .map(|uuid| (g, uuid.as_str()))
    });
    if let Some(found) = same_text {
        return Ok(found);
    }
    let gpu = unique_by_prefix(
        physical.iter().map(|g| (g, g.uuid.as_str())),
        gpu_uuid,
        "GPU-",
    )?;
    match gpu.mig_instances.as_slice() {
        [only] => Ok((gpu, only.as_str())),
        [] => Err(InvalidEntry::UnknownUuid),
        several => Err(InvalidEntry::UndecidableMigInstance {
            instances: several.len(),
        }),
    }
}

/// Gives devices their ordinals in list order.
fn numbered(devices: Vec<VisibleGpu>) -> Vec<VisibleGpu> {
    devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| VisibleGpu {
            cuda_ordinal: i as u32,
            ..d
        })
        .collect()
}

/// The one candidate whose UUID (without `prefix_tag`) starts with `prefix`.
fn unique_by_prefix<'a, T: Copy + 'a>(
    candidates: impl Iterator<Item = (T, &'a str)>,
    prefix: &str,
    prefix_tag: &str,
) -> Result<T, InvalidEntry> {
    let matches: Vec<T> = candidates
        .filter(|(_, uuid)| {
            let body = uuid.strip_prefix(prefix_tag).unwrap_or(uuid);
            body.to_ascii_lowercase().starts_with(prefix)
        })
        .map(|(c, _)| c)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(InvalidEntry::UnknownUuid),
        many => Err(InvalidEntry::AmbiguousUuid {
            matches: many.len(),
        }),
    }
}

/// PCI order: (domain, bus, device, function), unknown bus ids last, then NVML index.
fn pci_order(a: &PhysicalGpu, b: &PhysicalGpu) -> Ordering {
    let key = |g: &PhysicalGpu| parse_pci_bus_id(&g.pci_bus_id);
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then(a.nvml_index.cmp(&b.nvml_index))
}

/// "00000000:17:00.0" -> (0, 0x17, 0, 0); the domain may be 4 or 8 digits.
fn parse_pci_bus_id(text: &str) -> Option<(u32, u32, u32, u32)> {
    let mut parts = text.trim().split(':');
    let domain = u32::from_str_radix(parts.next()?, 16).ok()?;
    let bus = u32::from_str_radix(parts.next()?, 16).ok()?;
    let (device, function) = parts.next()?.split_once('.')?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        domain,
        bus,
        u32::from_str_radix(device, 16).ok()?,
        u32::from_str_radix(function, 16).ok()?,
    ))
}

/// A device CUDA enumerates that matches none of NVML's GPUs or MIG
/// instances: no telemetry can be read for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "CUDA device {cuda_ordinal} (UUID GPU-{uuid}) is none of the GPUs NVML lists: its memory, power and clocks cannot be read"
)]
pub struct UnmatchedDevice {
    pub cuda_ordinal: u32,
    /// The CUDA UUID, 8-4-4-4-12 hex, without prefix.
    pub uuid: String,
}

/// The authority: each CUDA device (its ordinal and the 16 bytes of
/// `cuDeviceGetUuid_v2`) matched to NVML's GPU and MIG UUIDs by their hex
/// digits, whatever the prefix (`GPU-`, `MIG-`) and letter case. In input order.
pub fn match_cuda_uuids(
    cuda: &[(u32, [u8; 16])],
    physical: &[PhysicalGpu],
) -> Vec<Result<VisibleGpu, UnmatchedDevice>> {
    cuda.iter()
        .map(|(ordinal, bytes)| {
            let hex = uuid_hex(&format_uuid(bytes));
            let whole_gpu =
                physical
                    .iter()
                    .find(|g| uuid_hex(&g.uuid) == hex)
                    .map(|g| VisibleGpu {
                        cuda_ordinal: *ordinal,
                        nvml_index: g.nvml_index,
                        uuid: g.uuid.clone(),
                        mig: false,
                    });
            let instance = || {
                physical.iter().find_map(|g| {
                    g.mig_instances
                        .iter()
                        .find(|uuid| uuid_hex(uuid) == hex)
                        .map(|uuid| VisibleGpu {
                            cuda_ordinal: *ordinal,
                            ..g.instance(uuid)
                        })
                })
            };
            whole_gpu.or_else(instance).ok_or_else(|| UnmatchedDevice {
                cuda_ordinal: *ordinal,
                uuid: format_uuid(bytes),
            })
        })
        .collect()
}

/// The 32 hex digits of a UUID, lower-case, without prefix or dashes.
fn uuid_hex(uuid: &str) -> String {
    let body = uuid
        .strip_prefix("GPU-")
        .or_else(|| uuid.strip_prefix("MIG-"))
        .unwrap_or(uuid);
    body.chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// CUDA's 16 UUID bytes as NVML writes them, 8-4-4-4-12 lower-case hex
/// (without the `GPU-` prefix).
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID_A: &str = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6";
    const UUID_B: &str = "GPU-89aa0000-1111-2222-3333-444455556666";
    const UUID_C: &str = "GPU-e429a63e-c61c-4795-b757-5132caeb8e70";
    const MIG_1: &str = "MIG-d9a47cfb-d1f2-d08c-b40e-0812b597ae69";
    const MIG_2: &str = "MIG-5b2d9c1e-0a0f-5f5e-9d4c-6b1a2b3c4d5e";

    fn gpu(index: u32, uuid: &str, bus: &str, cc: (u32, u32)) -> PhysicalGpu {
        PhysicalGpu {
            nvml_index: index,
            uuid: uuid.to_string(),
            pci_bus_id: bus.to_string(),
            compute_capability: Some(cc),
            multiprocessors: None,
            mig_instances: Vec::new(),
        }
    }

    /// NVML index 0: a T4 (7.5) on bus 0x17; 1: an A100 (8.0) on 0x65; 2: a
    /// T4 on 0xb3. CUDA's fastest-first order puts the A100 first.
    fn mixed_host() -> Vec<PhysicalGpu> {
        vec![
            gpu(0, UUID_A, "00000000:17:00.0", (7, 5)),
            gpu(1, UUID_B, "00000000:65:00.0", (8, 0)),
            gpu(2, UUID_C, "00000000:B3:00.0", (7, 5)),
        ]
    }

    fn listed(entries: Vec<VisibleEntry>) -> VisibleDevices {
        VisibleDevices::Listed {
            entries,
            stop: None,
        }
    }

    fn nvml_indices(v: &[VisibleGpu]) -> Vec<u32> {
        v.iter().map(|g| g.nvml_index).collect()
    }

    #[test]
    fn unset_is_all_and_empty_is_none() {
        assert_eq!(VisibleDevices::parse(None), VisibleDevices::All);
        assert_eq!(VisibleDevices::parse(Some("")), listed(vec![]));
        assert_eq!(VisibleDevices::parse(Some("  ")), listed(vec![]));
        let host = mixed_host();
        let none = expected_visible(&host, &listed(vec![]), DeviceOrder::PciBusId);
        assert!(none.is_empty());
    }

    #[test]
    fn indices_keep_their_order_and_blanks_are_ignored() {
        use VisibleEntry::Index;
        assert_eq!(
            VisibleDevices::parse(Some("0,2")),
            listed(vec![Index(0), Index(2)])
        );
        assert_eq!(
            VisibleDevices::parse(Some(" 2 , 0 ")),
            listed(vec![Index(2), Index(0)])
        );
        // strtoul: a sign, and anything after the digits ignored.
        assert_eq!(
            VisibleDevices::parse(Some("1gpu,+3,-0")),
            listed(vec![Index(1), Index(3), Index(0)])
        );
    }

    #[test]
    fn the_first_invalid_entry_ends_the_list() {
        use VisibleEntry::Index;
        for (value, kept, bad) in [
            ("0,2,-1,1", vec![Index(0), Index(2)], "-1"),
            ("-1", vec![], "-1"),
            ("NoDevFiles", vec![], "NoDevFiles"),
            ("1,NoDevFiles,0", vec![Index(1)], "NoDevFiles"),
            ("0, ,1", vec![Index(0)], ""),
        ] {
            assert_eq!(
                VisibleDevices::parse(Some(value)),
                VisibleDevices::Listed {
                    entries: kept,
                    stop: Some(ListStop::Invalid {
                        entry: bad.to_string(),
                        reason: InvalidEntry::NotADevice
                    })
                },
                "{value}"
            );
        }
    }

    #[test]
    fn a_repeated_entry_shows_no_device() {
        let parsed = VisibleDevices::parse(Some("0,1,0"));
        assert_eq!(
            parsed,
            VisibleDevices::Listed {
                entries: vec![],
                stop: Some(ListStop::Repeated { entry: "0".into() })
            }
        );
        // Two prefixes of one UUID repeat it too, found when resolving.
        let host = mixed_host();
        let r = resolve_visible(
            &host,
            &VisibleDevices::parse(Some("GPU-8932f937,GPU-8932")),
            DeviceOrder::PciBusId,
        );
        assert!(r.visible.is_empty());
        assert!(matches!(r.stop, Some(ListStop::Repeated { .. })), "{r:?}");
    }

    #[test]
    fn gpu_uuids_and_unique_prefixes_name_gpus() {
        let parsed = VisibleDevices::parse(Some(&format!("{UUID_C}, GPU-8932F937")));
        assert_eq!(
            parsed,
            listed(vec![
                VisibleEntry::GpuUuid(UUID_C[4..].to_string()),
                VisibleEntry::GpuUuid("8932f937".into()),
            ])
        );
        let v = expected_visible(&mixed_host(), &parsed, DeviceOrder::FastestFirst);
        assert_eq!(nvml_indices(&v), vec![2, 0]);
        assert_eq!(v[0].cuda_ordinal, 0);
        assert_eq!(v[1].cuda_ordinal, 1);
        assert_eq!(v[1].uuid, UUID_A);
    }

    #[test]
    fn an_ambiguous_or_unknown_prefix_ends_the_list() {
        let host = mixed_host();
        // "89" starts both UUID_A and UUID_B.
        let r = resolve_visible(
            &host,
            &VisibleDevices::parse(Some("GPU-e4,GPU-89,GPU-8932f937")),
            DeviceOrder::PciBusId,
        );
        assert_eq!(nvml_indices(&r.visible), vec![2]);
        assert_eq!(
            r.stop,
            Some(ListStop::Invalid {
                entry: "GPU-89".into(),
                reason: InvalidEntry::AmbiguousUuid { matches: 2 }
            })
        );
        let r = resolve_visible(
            &host,
            &VisibleDevices::parse(Some("GPU-123,GPU-e4")),
            DeviceOrder::PciBusId,
        );
        assert!(r.visible.is_empty());
        assert!(matches!(
            r.stop,
            Some(ListStop::Invalid {
                reason: InvalidEntry::UnknownUuid,
                ..
            })
        ));
    }

    #[test]
    fn an_entry_of_another_kind_ends_the_list() {
        assert_eq!(
            VisibleDevices::parse(Some(&format!("{UUID_A},1"))),
            VisibleDevices::Listed {
                entries: vec![VisibleEntry::GpuUuid(UUID_A[4..].into())],
                stop: Some(ListStop::Invalid {
                    entry: "1".into(),
                    reason: InvalidEntry::OtherKind
                })
            }
        );
        assert_eq!(
            VisibleDevices::parse(Some(&format!("1,{UUID_A}"))),
            VisibleDevices::Listed {
                entries: vec![VisibleEntry::Index(1)],
                stop: Some(ListStop::Invalid {
                    entry: UUID_A.into(),
                    reason: InvalidEntry::OtherKind
                })
            }
        );
        assert_eq!(
            VisibleDevices::parse(Some(&format!("{UUID_A},{MIG_1}"))),
            VisibleDevices::Listed {
                entries: vec![VisibleEntry::GpuUuid(UUID_A[4..].into())],
                stop: Some(ListStop::Invalid {
                    entry: MIG_1.into(),
                    reason: InvalidEntry::OtherKind
                })
            }
        );
    }

    #[test]
    fn an_index_past_the_last_device_ends_the_list() {
        let r = resolve_visible(
            &mixed_host(),
            &VisibleDevices::parse(Some("1,5,0")),
            DeviceOrder::PciBusId,
        );
        assert_eq!(nvml_indices(&r.visible), vec![1]);
        assert_eq!(
            r.stop,
            Some(ListStop::Invalid {
                entry: "5".into(),
                reason: InvalidEntry::IndexOutOfRange { devices: 3 }
            })
        );
    }

    #[test]
    fn pci_and_fastest_first_orders_differ_on_a_mixed_host() {
        let host = mixed_host();
        let all = VisibleDevices::All;
        let pci = expected_visible(&host, &all, DeviceOrder::PciBusId);
        assert_eq!(nvml_indices(&pci), vec![0, 1, 2]);
        let fastest = expected_visible(&host, &all, DeviceOrder::FastestFirst);
        assert_eq!(nvml_indices(&fastest), vec![1, 0, 2]);
        assert_eq!(
            fastest.iter().map(|g| g.cuda_ordinal).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        // Index 0 is the A100 by default and the first T4 in PCI order.
        let zero = VisibleDevices::parse(Some("0"));
        assert_eq!(
            nvml_indices(&expected_visible(&host, &zero, DeviceOrder::FastestFirst)),
            vec![1]
        );
        assert_eq!(
            nvml_indices(&expected_visible(&host, &zero, DeviceOrder::PciBusId)),
            vec![0]
        );
        // "2,0": reordered, counted in the chosen order.
        let two_zero = VisibleDevices::parse(Some("2,0"));
        assert_eq!(
            nvml_indices(&expected_visible(&host, &two_zero, DeviceOrder::PciBusId)),
            vec![2, 0]
        );
        assert_eq!(
            nvml_indices(&expected_visible(
                &host,
                &two_zero,
                DeviceOrder::FastestFirst
            )),
            vec![2, 1]
        );
    }

    #[test]
    fn pci_order_sorts_bus_ids_as_numbers_not_nvml_indices() {
        // NVML index order disagreeing with the bus ids, and a 4-digit domain.
        let host = vec![
            gpu(0, UUID_A, "0000:b3:00.0", (8, 0)),
            gpu(1, UUID_B, "00000000:17:00.0", (8, 0)),
        ];
        let pci = expected_visible(&host, &VisibleDevices::All, DeviceOrder::PciBusId);
        assert_eq!(nvml_indices(&pci), vec![1, 0]);
    }

    #[test]
    fn device_order_reads_pci_bus_id_and_defaults_to_fastest() {
        assert_eq!(DeviceOrder::parse(None), DeviceOrder::FastestFirst);
        assert_eq!(
            DeviceOrder::parse(Some("PCI_BUS_ID")),
            DeviceOrder::PciBusId
        );
        assert_eq!(
            DeviceOrder::parse(Some("FASTEST_FIRST")),
            DeviceOrder::FastestFirst
        );
        assert_eq!(DeviceOrder::parse(Some("pci")), DeviceOrder::FastestFirst);
    }

    fn mig_host() -> Vec<PhysicalGpu> {
        let mut a100 = gpu(0, UUID_B, "00000000:17:00.0", (8, 0));
        a100.mig_instances = vec![MIG_1.into(), MIG_2.into()];
        vec![a100, gpu(1, UUID_A, "00000000:65:00.0", (7, 5))]
    }

    #[test]
    fn mig_uuids_in_both_forms_name_instances() {
        let host = mig_host();
        let modern = VisibleDevices::parse(Some("MIG-5b2d9c1e"));
        assert_eq!(
            modern,
            listed(vec![VisibleEntry::MigUuid("5b2d9c1e".into())])
        );
        let v = expected_visible(&host, &modern, DeviceOrder::PciBusId);
        assert_eq!(
            v,
            vec![VisibleGpu {
                cuda_ordinal: 0,
                nvml_index: 0,
                uuid: MIG_2.into(),
                mig: true
            }]
        );
        let legacy = VisibleDevices::parse(Some(&format!("MIG-{UUID_B}/1/0")));
        assert_eq!(
            legacy,
            listed(vec![VisibleEntry::LegacyMig {
                gpu_uuid: UUID_B[4..].into(),
                gpu_instance: 1,
                compute_instance: 0
            }])
        );
        // Two instances: the ids alone cannot tell which (a prediction limit).
        let r = resolve_visible(&host, &legacy, DeviceOrder::PciBusId);
        assert!(r.visible.is_empty());
        assert_eq!(
            r.stop.map(|s| s.to_string()),
            Some(format!(
                "CUDA_VISIBLE_DEVICES entry \"MIG-{UUID_B}/1/0\" names one of its GPU's 2 MIG instances by ids NVML does not report: CUDA ignores it and every entry after it"
            ))
        );
        // One instance: it is the one.
        let mut single = mig_host();
        single[0].mig_instances.truncate(1);
        let v = expected_visible(&single, &legacy, DeviceOrder::PciBusId);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].uuid, MIG_1);
        assert!(v[0].mig);
        // A driver before R470 reports instance UUIDs in the legacy form.
        let mut old_driver = mig_host();
        old_driver[0].mig_instances =
            vec![format!("MIG-{UUID_B}/1/0"), format!("MIG-{UUID_B}/2/0")];
        let v = expected_visible(
            &old_driver,
            &VisibleDevices::parse(Some(&format!("MIG-{UUID_B}/2/0"))),
            DeviceOrder::PciBusId,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].uuid, format!("MIG-{UUID_B}/2/0"));
        // Malformed legacy entries are not devices.
        assert!(matches!(
            VisibleDevices::parse(Some(&format!("MIG-{UUID_B}/1"))),
            VisibleDevices::Listed { ref entries, stop: Some(_) } if entries.is_empty()
        ));
    }

    #[test]
    fn a_gpu_in_mig_mode_is_seen_as_its_instances() {
        let host = mig_host();
        let all = expected_visible(&host, &VisibleDevices::All, DeviceOrder::PciBusId);
        assert_eq!(
            all.iter().map(|g| g.uuid.as_str()).collect::<Vec<_>>(),
            vec![MIG_1, MIG_2, UUID_A]
        );
        assert_eq!(
            all.iter().map(|g| g.cuda_ordinal).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    fn uuid_bytes(uuid: &str) -> [u8; 16] {
        let hex = uuid_hex(uuid);
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    #[test]
    fn format_uuid_is_nvml_text() {
        let bytes = uuid_bytes(UUID_A);
        assert_eq!(format_uuid(&bytes), &UUID_A[4..]);
        assert_eq!(
            format_uuid(&[0xAB; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
    }

    #[test]
    fn cuda_uuids_match_nvml_gpus_whatever_the_ordinals() {
        let host = mixed_host();
        // CUDA_VISIBLE_DEVICES=2,0 under PCI order: ordinal 0 is NVML 2.
        let cuda = [(0, uuid_bytes(UUID_C)), (1, uuid_bytes(UUID_A))];
        let matched = match_cuda_uuids(&cuda, &host);
        assert_eq!(
            matched,
            vec![
                Ok(VisibleGpu {
                    cuda_ordinal: 0,
                    nvml_index: 2,
                    uuid: UUID_C.into(),
                    mig: false
                }),
                Ok(VisibleGpu {
                    cuda_ordinal: 1,
                    nvml_index: 0,
                    uuid: UUID_A.into(),
                    mig: false
                }),
            ]
        );
    }

    #[test]
    fn a_cuda_mig_instance_matches_its_parent_gpu() {
        let host = mig_host();
        let matched = match_cuda_uuids(&[(0, uuid_bytes(MIG_2))], &host);
        assert_eq!(
            matched,
            vec![Ok(VisibleGpu {
                cuda_ordinal: 0,
                nvml_index: 0,
                uuid: MIG_2.into(),
                mig: true
            })]
        );
        // NVML writing upper case changes nothing.
        let mut upper = mig_host();
        upper[1].uuid = UUID_A.to_ascii_uppercase();
        let matched = match_cuda_uuids(&[(3, uuid_bytes(UUID_A))], &upper);
        assert_eq!(matched[0].as_ref().map(|g| g.nvml_index), Ok(1));
    }

    #[test]
    fn a_cuda_device_nvml_does_not_list_is_reported() {
        let host = mixed_host();
        let stranger = [0x11u8; 16];
        let matched = match_cuda_uuids(&[(0, uuid_bytes(UUID_B)), (1, stranger)], &host);
        assert_eq!(matched[0].as_ref().map(|g| g.nvml_index), Ok(1));
        let err = matched[1].clone().expect_err("unmatched");
        assert_eq!(
            err,
            UnmatchedDevice {
                cuda_ordinal: 1,
                uuid: "11111111-1111-1111-1111-111111111111".into()
            }
        );
        assert!(err.to_string().contains("CUDA device 1"));
    }

    #[test]
    fn physical_gpus_come_back_from_an_inventory() {
        let info = GpuInfo {
            index: 3,
            uuid: UUID_B.into(),
            compute_capability: Some("8.0".into()),
            pci_bus_id: Some("00000000:65:00.0".into()),
            mig_instances: vec![MIG_1.into()],
            ..GpuInfo::default()
        };
        let p = PhysicalGpu::from_info(&info);
        assert_eq!(p.nvml_index, 3);
        assert_eq!(p.compute_capability, Some((8, 0)));
        assert_eq!(p.mig_instances, vec![MIG_1.to_string()]);
        assert_eq!(p.pci_bus_id, "00000000:65:00.0");
        assert_eq!(parse_compute_capability("12.0"), Some((12, 0)));
        assert_eq!(parse_compute_capability("8"), None);
    }

    #[test]
    fn stops_explain_themselves_in_one_line() {
        let stop = ListStop::Invalid {
            entry: "-1".into(),
            reason: InvalidEntry::NotADevice,
        };
        assert_eq!(
            stop.to_string(),
            "CUDA_VISIBLE_DEVICES entry \"-1\" is not a device index or UUID: CUDA ignores it and every entry after it"
        );
    }
}
