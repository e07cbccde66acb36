//! f32 matrix products on the CPU through the gemm crate, called directly.
//!
//! gemm is candle's own CPU matmul backend; `Tensor::matmul` calls it with a
//! freshly zeroed, contiguous output. The CPU forward needs three things that
//! call cannot express (bench/RESULTS.md, "CPU: where the time goes"):
//! accumulating into an output that already holds the bias and the residual
//! (`addmm`'s way, no separate addition passes), reading a head's q, k and v
//! in place from the fused projection's rows (no split-heads copy), and
//! writing a head's context straight into its columns (no merge copy).
//!
//! The views below check their extents against their slices once, so that
//! the single `unsafe` call into gemm cannot read or write outside them.

/// A read-only strided matrix over a slice: element (r, c) is
/// `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable matrix with unit column stride (rows may be further apart
/// than `cols`, e.g. one head's columns of a wider row). Distinct (r, c)
/// are distinct elements, which gemm's threads rely on.
#[derive(Debug)]
pub(super) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

/// The largest index a (rows x cols) view with these strides touches, or
/// `None` for an empty view.
fn last_index(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    Some((rows - 1) * row_stride + (cols - 1) * col_stride)
}

impl<'a> MatRef<'a> {
    /// Panics when the view does not fit in `data`: a shape bug in the
    /// caller, never a property of the input.
    pub(super) fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        if let Some(last) = last_index(rows, cols, row_stride, col_stride) {
            assert!(
                last < data.len(),
                "a {rows}x{cols} view with strides ({row_stride}, {col_stride}) needs {} elements, the slice has {}",
                last + 1,
                data.len()
            );
        }
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// A contiguous row-major matrix.
    pub(super) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub(super) fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

impl<'a> MatMut<'a> {
    /// Panics when the view does not fit in `data` or its rows overlap.
    pub(super) fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows <= 1 || row_stride >= cols,
            "rows of {cols} elements {row_stride} apart would overlap"
        );
        if let Some(last) = last_index(rows, cols, row_stride, 1) {
            assert!(
                last < data.len(),
                "a {rows}x{cols} output with row stride {row_stride} needs {} elements, the slice has {}",
                last + 1,
                data.len()
            );
        }
        MatMut {
            data,
            rows,
            cols,
            row_stride,
        }
    }

    /// A contiguous row-major matrix.
    pub(super) fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }
}

/// What the product does with the output's current contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Output {
    /// `dst = lhs · rhs`: the old contents are never read.
    Overwrite,
    /// `dst += lhs · rhs`: the output holds the bias (and residual) already.
    Accumulate,
}

/// `dst (=|+=) lhs · rhs` with `threads` threads (gemm splits the product
/// over rayon's pool; 1 runs it on the calling thread).
pub(super) fn gemm(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    output: Output,
    threads: usize,
) {
    assert!(
        dst.rows == lhs.rows && dst.cols == rhs.cols && lhs.cols == rhs.rows,
        "product shapes ({}x{}) . ({}x{}) -> ({}x{})",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        dst.rows,
        dst.cols
    );
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if output == Output::Overwrite {
            for row in dst.data.chunks_mut(dst.row_stride.max(1)).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Strides of at most a slice's length fit in isize (a slice never
    // exceeds isize::MAX bytes).
    let s = |x: usize| x as isize;
    // SAFETY: every view was checked at construction to lie inside its
    // slice for the shape asserted above, so gemm reads lhs and rhs and
    // writes dst only inside them; dst's rows do not overlap (checked) and
    // its column stride is 1, so each element is written by one thread;
    // dst is borrowed mutably while lhs and rhs are shared borrows, so the
    // output cannot alias an input. gemm's contract: dst := alpha·dst +
    // beta·lhs·rhs, with dst read only when `read_dst` is true.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            s(dst.row_stride),
            output == Output::Accumulate,
            lhs.data.as_ptr(),
            s(lhs.col_stride),
            s(lhs.row_stride),
            rhs.data.as_ptr(),
            s(rhs.col_stride),
            s(rhs.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop, for comparison.
    fn naive(lhs: MatRef<'_>, rhs: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for r in 0..lhs.rows {
            for c in 0..rhs.cols {
                let mut acc = 0.0f64;
                for i in 0..lhs.cols {
                    acc += f64::from(lhs.data[r * lhs.row_stride + i * lhs.col_stride])
                        * f64::from(rhs.data[i * rhs.row_stride + c * rhs.col_stride]);
                }
                out[r * rhs.cols + c] = acc as f32;
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn strided_views_and_accumulation_match_the_triple_loop() {
        // lhs: 5x7 columns 2..9 of a 5x12 buffer; rhs: the transpose of a
        // 6x7 matrix stored in rows of 9 (k's layout inside the fused qkv).
        let lhs_buf = values(5 * 12, 1);
        let rhs_buf = values(6 * 9, 2);
        let lhs = MatRef::new(&lhs_buf[2..], 5, 7, 12, 1);
        let rhs = MatRef::new(&rhs_buf, 6, 7, 9, 1).t();
        let want = naive(lhs, rhs);
        for threads in [1, 2] {
            // Output: columns 3..9 of 5 rows of 10, starting from 0.5.
            let mut out = [0.5f32; 5 * 10];
            gemm(
                MatMut::new(&mut out[3..], 5, 6, 10),
                lhs,
                rhs,
                Output::Accumulate,
                threads,
            );
            for r in 0..5 {
                for c in 0..10 {
                    let got = out[r * 10 + c];
                    let expect = if (3..9).contains(&c) {
                        want[r * 6 + c - 3] + 0.5
                    } else {
                        0.5
                    };
                    assert!((got - expect).abs() < 1e-5, "({r}, {c}): {got} vs {expect}");
                }
            }
            let mut fresh = [f32::NAN; 5 * 6];
            gemm(
                MatMut::rows(&mut fresh, 5, 6),
                lhs,
                rhs,
                Output::Overwrite,
                threads,
            );
            for (got, expect) in fresh.iter().zip(&want) {
                assert!((got - expect).abs() < 1e-5, "{got} vs {expect}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "needs 52 elements")]
    fn a_view_past_its_slice_is_refused() {
        let buf = vec![0.0f32; 50];
        let _ = MatRef::new(&buf, 6, 2, 10, 1);
    }

    #[test]
    #[should_panic(expected = "would overlap")]
    fn overlapping_output_rows_are_refused() {
        let mut buf = vec![0.0f32; 50];
        let _ = MatMut::new(&mut buf, 5, 4, 3);
    }
}
