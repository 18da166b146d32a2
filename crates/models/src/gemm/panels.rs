//! Products with few rows, `x · w` for a weight `w (k, n)` that stays fixed and `x` of
//! at most [`MAX_ROWS`] rows, through a copy of `w` in panels of 32 columns.
//!
//! A circuit's attribution pass multiplies a few token rows (a GPT-2-shaped batch of
//! 2 × 10 is 20 rows) by every weight of the model and of the SAEs' encoders. At that
//! size a product does 20 multiply–adds per weight it streams from memory, and MKL's
//! kernels, built for many rows, ran it at about half the CPU's multiply–add rate (170
//! GFLOP/s on two cores of the Intel Xeon of `docs/benchmarks/circuit.md`, 350 at 128
//! rows), reading the weight in strided pieces. Here each weight is copied once, on
//! first use, into panels of 32 columns (all `k` rows of a panel contiguous, aligned to
//! 64 bytes), and one kernel keeps a tile of up to 10 rows × 32 columns in 20 AVX-512
//! registers while it streams a panel, prefetching ahead: a 20 × 768 · 768 × 3072
//! product from memory 0.45 ms against MKL's 0.81 ms there (`examples/bench_panels`
//! in the SAE crate prints the ratio for every row count). CPUs without AVX-512 but with
//! AVX2 + FMA (the AMD EPYCs) get a kernel of 6 rows × 16 columns on the same panels;
//! on the Intel Xeon, against MKL restricted to AVX2 (`MKL_ENABLE_INSTRUCTIONS=AVX2`),
//! it ran 1.1–2.0× MKL's speed up to 24 rows.
//!
//! Each output element is one sum over `k` in order (blocks of 128 rows, each
//! summed from zero, then added), with fused multiply–adds, by one thread, so results do
//! not depend on the thread count, nor on which kernel ran (tested bit for bit); they may
//! differ from [`super::matmul`]'s in the last bits (another summation order). A CPU
//! with neither kernel's instructions, one row or more than [`MAX_ROWS`], or an empty
//! operand: [`product`] declines and the caller takes the general product.
use std::sync::OnceLock;

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// The most rows of `x` a panel product takes. Up to 24 rows it ran at 0.97–1.79× MKL's
/// speed on GPT-2 small's four weight shapes (`examples/bench_panels` in the SAE crate:
/// 1.4–1.8× at 10–20 rows on the wide ones, about even on the narrow ones at 24); by 30
/// rows MKL (which reaches the CPU's multiply–add rate from about 64 rows) was ahead on
/// the narrow ones (0.94× for 30 × 3072 · 3072 × 768).
pub const MAX_ROWS: usize = 24;
/// The fewest rows it takes: one row is a matrix–vector product, bound by memory on
/// either side (0.94× MKL there), so the general product keeps it.
pub const MIN_ROWS: usize = 2;
/// The environment variable that chooses the panel products (read by the binaries that
/// run the transformer, passed to [`set_choice`]): `auto` (the default: the
/// best kernel this CPU has), `avx2` (the AVX2 kernel on a CPU that also has AVX-512:
/// with `MKL_ENABLE_INSTRUCTIONS=AVX2` a stand-in for an AMD EPYC) or `off` (no panel
/// copies: each weight's copies cost its size again per direction used, 1 GB in a
/// SmolLM2 circuit stage).
pub const PANELS_ENV: &str = "CIRCUITRY_PANELS";
/// This process's kernel ([`Isa::detect`]).
static CHOICE: OnceLock<Option<Isa>> = OnceLock::new();

/// Pick this process's panel kernel from the value of [`PANELS_ENV`], which a binary's
/// `main` reads (unset: `None`, the same as `auto`). Once per process, before its first
/// product; later calls change nothing. Refuses a value that is not `auto`, `off`, or
/// `avx2` on a CPU with AVX2, saying so.
pub fn set_choice(value: Option<&str>) -> Result<(), String> {
    let isa = Isa::choose(value, &Isa::all())?;
    let _ = CHOICE.set(isa);
    Ok(())
}

/// Columns per panel: two AVX-512 vectors.
const WIDTH: usize = 32;
/// Rows per register tile: 10 × 2 accumulators, two weight vectors, and broadcasts.
const GROUP: usize = 10;
/// Rows of a panel per pass of the tiles: `K_BLOCK × WIDTH` floats (16 KB) and the
/// matching `K_BLOCK × MAX_ROWS` of `xᵀ` stay in the first-level cache while every
/// group of 10 rows passes over them.
const K_BLOCK: usize = 128;
/// How many panel rows ahead the first tile prefetches.
const PREFETCH: usize = 32;

/// A weight's panel copy, built on the first product that uses it: one per weight
/// *and orientation* (`x · w` and `dy · wᵀ` need two). Cloning gives an empty cache.
#[derive(Default)]
pub struct Panels(OnceLock<Packed>);

impl Panels {
    /// Whether the copy has been built.
    pub fn is_built(&self) -> bool {
        self.0.get().is_some()
    }
}

impl Clone for Panels {
    fn clone(&self) -> Panels {
        Panels::default()
    }
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(p) => write!(f, "Panels({} × {})", p.k, p.n),
            None => write!(f, "Panels(not built)"),
        }
    }
}

/// `w (k, n)` in panels of [`WIDTH`] columns: panel `p` holds `w[r, WIDTH p + j]` at
/// `WIDTH r + j`, the last panel's missing columns zero.
struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
    /// Where the 64-byte-aligned panels start in `data`.
    start: usize,
}

impl Packed {
    fn new(w: ArrayView2<'_, f32>) -> Packed {
        let (k, n) = w.dim();
        let len = n.div_ceil(WIDTH) * k * WIDTH;
        let mut data = vec![0.0f32; len + 16];
        let start = data.as_ptr().align_offset(64).min(16);
        data[start..start + len]
            .par_chunks_mut(k * WIDTH)
            .enumerate()
            .for_each(|(p, panel)| {
                let cols = w.slice(ndarray::s![.., p * WIDTH..(p * WIDTH + WIDTH).min(n)]);
                for (r, row) in cols.outer_iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        panel[r * WIDTH + j] = v;
                    }
                }
            });
        Packed { k, n, data, start }
    }

    /// Panels `first .. first + count`, back to back.
    fn panels(&self, first: usize, count: usize) -> &[f32] {
        let size = self.k * WIDTH;
        &self.data[self.start + first * size..self.start + (first + count) * size]
    }
}

/// `x · w` through `w`'s panels in `cache` (copied there on first use), or `None` when
/// this path does not apply: a CPU without AVX-512 or AVX2 + FMA, `x` with fewer than
/// [`MIN_ROWS`] or more than [`MAX_ROWS`] rows, or an empty operand.
///
/// # Panics
/// When the shapes do not agree, or `cache` holds the panels of a weight of another
/// shape (a cache belongs to one weight).
pub fn product(
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    cache: &Panels,
) -> Option<Array2<f32>> {
    product_with(Isa::detect()?, x, w, cache)
}

/// The instruction sets of the panel kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: tiles of 10 rows × 32 columns in 20 of its 32 vector registers.
    Avx512,
    /// AVX2 + FMA (AMD EPYCs without AVX-512): tiles of 6 rows × 16 columns, twice per
    /// panel, in 12 of its 16 vector registers.
    Avx2,
}

impl Isa {
    /// What [`product`] uses: the one [`set_choice`] picked, else the best this CPU has;
    /// `None`: no panel products.
    pub fn detect() -> Option<Isa> {
        *CHOICE.get_or_init(|| Isa::all().first().copied())
    }

    /// The kernel [`PANELS_ENV`]'s `value` (unset: `None`) picks among `all` (this CPU's,
    /// best first), or why the value is refused.
    fn choose(value: Option<&str>, all: &[Isa]) -> Result<Option<Isa>, String> {
        match value {
            None | Some("auto") => Ok(all.first().copied()),
            Some("off") => Ok(None),
            Some("avx2") if all.contains(&Isa::Avx2) => Ok(Some(Isa::Avx2)),
            Some(other) => Err(format!(
                "{PANELS_ENV}={other:?} is not one of auto, off, or avx2 on a CPU with AVX2 \
                 (this one has {all:?})"
            )),
        }
    }

    /// Every one this CPU has, best first (tests and benchmarks try each).
    pub fn all() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|isa| isa.available())
            .collect()
    }

    /// Whether this CPU has it (the standard library caches the answer).
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        match self {
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

/// [`product`] with a chosen instruction set, which this CPU must have ([`Isa::available`]):
/// for tests and benchmarks.
///
/// # Panics
/// As [`product`], and when the CPU lacks `isa`.
pub fn product_with(
    isa: Isa,
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    cache: &Panels,
) -> Option<Array2<f32>> {
    assert!(isa.available(), "panel product: this CPU lacks {isa:?}");
    let (m, k) = x.dim();
    let n = w.ncols();
    assert_eq!(
        w.nrows(),
        k,
        "panel product: shapes {:?} · {:?} do not agree",
        x.dim(),
        w.dim()
    );
    if !(MIN_ROWS..=MAX_ROWS).contains(&m) || k == 0 || n == 0 {
        return None;
    }
    // Built outside the cell and then offered to it, not in `get_or_init`: the copy runs
    // on rayon's threads, and a thread waiting for it may run (steal) another product
    // with this weight, which must not wait on the cell it is filling. Two threads may
    // both build it once; the first kept wins.
    let packed = match cache.0.get() {
        Some(p) => p,
        None => {
            let _ = cache.0.set(Packed::new(w));
            cache.0.get()?
        }
    };
    assert!(
        (packed.k, packed.n) == (k, n),
        "panel product: the cache holds panels of a {} × {} weight, not {k} × {n}",
        packed.k,
        packed.n
    );
    let mut xt = vec![0.0f32; k * m]; // xᵀ (k, m)
    for (i, row) in x.outer_iter().enumerate() {
        for (r, &v) in row.iter().enumerate() {
            xt[r * m + i] = v;
        }
    }
    // Each task multiplies a run of adjacent panels, which lie back to back in memory:
    // it streams them as one and prefetches across their edges. (Any split gives the
    // same values: an output element is one panel's sum either way.)
    let panels = n.div_ceil(WIDTH);
    let per_task = panels.div_ceil(2 * rayon::current_num_threads()).max(1);
    let mut c = Array2::<f32>::zeros((m, n));
    c.axis_chunks_iter_mut(Axis(1), per_task * WIDTH)
        .into_par_iter()
        .enumerate()
        .for_each(|(t, mut block)| {
            let count = block.ncols().div_ceil(WIDTH);
            let run = packed.panels(t * per_task, count);
            let mut acc = [0.0f32; MAX_ROWS * WIDTH];
            for q in 0..count {
                // SAFETY: the CPU has `isa` (checked above); `xt` holds `k × m` values,
                // `run` `count` panels of `k × WIDTH`, `acc` `MAX_ROWS × WIDTH`.
                unsafe {
                    match isa {
                        Isa::Avx512 => x86::panel_product(k, &xt, m, run, q, &mut acc),
                        Isa::Avx2 => x86::panel_product_avx2(k, &xt, m, run, q, &mut acc),
                    }
                };
                let cols = (block.ncols() - q * WIDTH).min(WIDTH);
                for (i, mut row) in block.outer_iter_mut().enumerate() {
                    for (j, out) in row.iter_mut().skip(q * WIDTH).take(cols).enumerate() {
                        *out = acc[i * WIDTH + j];
                    }
                }
            }
        });
    Some(c)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{GROUP, K_BLOCK, PREFETCH, WIDTH};
    use std::arch::x86_64::*;

    /// Rows of `x` per AVX2 tile: 6 × 2 accumulators of 8 lanes, two weight vectors and a
    /// broadcast in 15 of 16 registers.
    const GROUP_AVX2: usize = 6;

    /// What a tile prefetches while it streams its panel rows.
    #[derive(Clone, Copy, PartialEq)]
    enum Prefetch {
        /// [`PREFETCH`] rows ahead into the first-level cache (the block's first tile,
        /// which reads the rows from memory).
        Near,
        /// The next block into the second-level cache (the block's second tile).
        Next,
        /// Nothing (the block is in the first-level cache by then).
        None,
    }

    /// One tile's work: `size` rows of `x` (from `x`, stride `m` in `xᵀ`) over `rows`
    /// panel rows from `w` (rows `WIDTH` apart), into `out` (rows `WIDTH` apart): stored
    /// when `first` (the panel's first block), else added; `left`: panel rows from `w` to
    /// the run's end (no prefetch beyond).
    #[derive(Clone, Copy)]
    struct Tile {
        rows: usize,
        size: usize,
        x: *const f32,
        m: usize,
        w: *const f32,
        out: *mut f32,
        first: bool,
        prefetch: Prefetch,
        left: usize,
    }

    /// `acc[i, j] = Σ_r xt[r, i] · panel[r, j]` for `i < m`, `j < WIDTH` (`acc` row-major
    /// with rows of `WIDTH`), panel `q` of `run`, over its `k` rows: blocks of
    /// [`K_BLOCK`] rows, each passed by every group of up to `group` rows of `x` in turn,
    /// in `parts` column parts of `WIDTH / parts`; each block's sums start from zero and
    /// are added to the running total, so the rounding error grows with the block length
    /// plus the number of blocks, not with `k` (as blocked library kernels do). `tile`
    /// does each tile; the kernels below differ only in it.
    ///
    /// # Safety
    /// `tile` must be safe to call on tiles inside these bounds: `xt.len() ≥ k · m`,
    /// `run.len() ≥ (q + 1) · k · WIDTH`, `acc.len() ≥ m · WIDTH`.
    #[inline(always)]
    unsafe fn blocks(
        (k, xt, m): (usize, &[f32], usize),
        (run, q): (&[f32], usize),
        acc: &mut [f32],
        (group, parts): (usize, usize),
        mut tile: impl FnMut(Tile),
    ) {
        debug_assert!(
            xt.len() >= k * m && run.len() >= (q + 1) * k * WIDTH && acc.len() >= m * WIDTH
        );
        // Rows of `run` from this panel's start to the run's end: the prefetch limit.
        let end = run.len() / WIDTH - q * k;
        let part = WIDTH / parts;
        let mut k0 = 0;
        while k0 < k {
            let rows = K_BLOCK.min(k - k0);
            let w = run[(q * k + k0) * WIDTH..].as_ptr();
            for g in 0..m.div_ceil(group) {
                for p in 0..parts {
                    tile(Tile {
                        rows,
                        size: group.min(m - g * group),
                        x: xt[k0 * m + g * group..].as_ptr(),
                        m,
                        // SAFETY: a part's first column lies inside the panel row.
                        w: unsafe { w.add(p * part) },
                        out: acc[g * group * WIDTH + p * part..].as_mut_ptr(),
                        first: k0 == 0,
                        prefetch: match (g, p) {
                            (0, 0) => Prefetch::Near,
                            (1, 0) => Prefetch::Next,
                            _ => Prefetch::None,
                        },
                        left: end - k0,
                    });
                }
            }
            k0 += rows;
        }
    }

    /// Prefetch `t`'s panel row `r` as its `prefetch` says (both cache lines of the row).
    ///
    /// # Safety
    /// `t.w` must start a panel row (the first part's tiles prefetch).
    #[inline(always)]
    unsafe fn prefetch(t: &Tile, r: usize) {
        let ahead = match t.prefetch {
            Prefetch::Near if r + PREFETCH < t.left => PREFETCH,
            Prefetch::Next if r + K_BLOCK < t.left => K_BLOCK,
            _ => return,
        };
        // SAFETY: the row `r + ahead` is inside the run (`left`); 16 floats on is its
        // second cache line.
        unsafe {
            let p = t.w.add((r + ahead) * WIDTH);
            if ahead == PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(p.add(16) as *const i8);
            } else {
                _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(p.add(16) as *const i8);
            }
        }
    }

    /// [`blocks`] with AVX-512F tiles of up to [`GROUP`] rows × 32 columns.
    ///
    /// # Safety
    /// AVX-512F must be available; the lengths of [`blocks`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_product(
        k: usize,
        xt: &[f32],
        m: usize,
        run: &[f32],
        q: usize,
        acc: &mut [f32],
    ) {
        // SAFETY: the caller's lengths and CPU; the tiles stay inside them.
        unsafe {
            blocks((k, xt, m), (run, q), acc, (GROUP, 1), |t| match t.size {
                10 => tile::<10>(t),
                9 => tile::<9>(t),
                8 => tile::<8>(t),
                7 => tile::<7>(t),
                6 => tile::<6>(t),
                5 => tile::<5>(t),
                4 => tile::<4>(t),
                3 => tile::<3>(t),
                2 => tile::<2>(t),
                _ => tile::<1>(t),
            })
        }
    }

    /// [`blocks`] with AVX2 + FMA tiles of up to [`GROUP_AVX2`] rows × 16 columns, two per
    /// panel (the same sums per lane as [`panel_product`], so the same bits).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; the lengths of [`blocks`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel_product_avx2(
        k: usize,
        xt: &[f32],
        m: usize,
        run: &[f32],
        q: usize,
        acc: &mut [f32],
    ) {
        // SAFETY: the caller's lengths and CPU; the tiles stay inside them.
        unsafe {
            blocks((k, xt, m), (run, q), acc, (GROUP_AVX2, 2), |t| {
                match t.size {
                    6 => tile_avx2::<6>(t),
                    5 => tile_avx2::<5>(t),
                    4 => tile_avx2::<4>(t),
                    3 => tile_avx2::<3>(t),
                    2 => tile_avx2::<2>(t),
                    _ => tile_avx2::<1>(t),
                }
            })
        }
    }

    /// A tile function for one instruction set: `R` rows of `x` × two vectors of
    /// `$lanes` columns, a broadcast and two fused multiply–adds per row of `x` and
    /// panel row (the same operations per lane for every set, hence the same bits).
    macro_rules! tile_fn {
        ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal, $zero:ident,
         $load:ident, $broadcast:expr, $fma:ident, $add:ident, $store:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            #[inline]
            unsafe fn $name<const R: usize>(t: Tile) {
                let mut a = [[$zero(); 2]; R];
                // SAFETY (whole body): the bounds `blocks` was given.
                unsafe {
                    for r in 0..t.rows {
                        prefetch(&t, r);
                        let wr = t.w.add(r * WIDTH);
                        let v0 = $load(wr);
                        let v1 = $load(wr.add($lanes));
                        let xr = t.x.add(r * t.m);
                        for (i, ai) in a.iter_mut().enumerate() {
                            let b = $broadcast(xr.add(i));
                            ai[0] = $fma(v0, b, ai[0]);
                            ai[1] = $fma(v1, b, ai[1]);
                        }
                    }
                    for (i, ai) in a.iter().enumerate() {
                        let (p0, p1) = (t.out.add(i * WIDTH), t.out.add(i * WIDTH + $lanes));
                        if t.first {
                            $store(p0, ai[0]);
                            $store(p1, ai[1]);
                        } else {
                            $store(p0, $add($load(p0), ai[0]));
                            $store(p1, $add($load(p1), ai[1]));
                        }
                    }
                }
            }
        };
    }

    tile_fn!(
        /// `R` rows × 32 columns with AVX-512F.
        tile, "avx512f", 16, _mm512_setzero_ps, _mm512_loadu_ps,
        |p: *const f32| _mm512_set1_ps(*p), _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps
    );
    tile_fn!(
        /// `R` rows × 16 columns with AVX2 + FMA.
        tile_avx2, "avx2,fma", 8, _mm256_setzero_ps, _mm256_loadu_ps,
        |p: *const f32| _mm256_broadcast_ss(&*p), _mm256_fmadd_ps, _mm256_add_ps,
        _mm256_storeu_ps
    );
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn panel_product_avx2(
        _: usize,
        _: &[f32],
        _: usize,
        _: &[f32],
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!("panel products need AVX2")
    }

    pub(super) unsafe fn panel_product(
        _: usize,
        _: &[f32],
        _: usize,
        _: &[f32],
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!("panel products need AVX-512")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(m: usize, n: usize, seed: u64) -> Array2<f32> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            let x = (i as u64 * 7919 + j as u64 * 104_729 + seed * 31) % 1000;
            x as f32 / 500.0 - 1.0
        })
    }

    /// Max |ours − f64 product| relative to `Σ_r |x_ir w_rj|` over every element.
    fn rel_err(c: &Array2<f32>, x: &Array2<f32>, w: ArrayView2<'_, f32>) -> f64 {
        let (xd, wd) = (x.mapv(f64::from), w.mapv(f64::from));
        let want = xd.dot(&wd);
        let scale = xd.mapv(f64::abs).dot(&wd.mapv(f64::abs));
        let mut worst = 0.0f64;
        for ((&o, &t), &s) in c.iter().zip(want.iter()).zip(scale.iter()) {
            worst = worst.max((f64::from(o) - t).abs() / s.max(1e-30));
        }
        worst
    }

    #[test]
    fn panel_products_equal_the_f64_product_at_every_shape() {
        if Isa::all().is_empty() {
            eprintln!("neither AVX-512 nor AVX2 here: the panel product declines");
            let cache = Panels::default();
            assert!(product(filled(3, 5, 1).view(), filled(5, 7, 2).view(), &cache).is_none());
            return;
        }
        // Rows MIN_ROWS..=MAX_ROWS (partial groups of both kernels), k across a block
        // edge, n with a partial panel; the weight row-major and transposed (the
        // backward's wᵀ); every instruction set this CPU has, each against f64, and all
        // of them bit for bit alike (the same sums in the same order per lane).
        for &(m, k, n) in &[
            (2, 1, 1),
            (7, 300, 45),
            (20, 768, 96),
            (11, 257, 33),
            (24, 513, 64),
            (23, 64, 31),
        ] {
            let x = filled(m, k, 1);
            let w = filled(k, n, 2);
            let wt = filled(n, k, 3);
            for (name, view) in [("w", w.view()), ("wᵀ", wt.t())] {
                let mut first: Option<Array2<f32>> = None;
                for isa in Isa::all() {
                    let cache = Panels::default();
                    let c = product_with(isa, x.view(), view, &cache).expect("few rows");
                    assert!(cache.is_built());
                    let err = rel_err(&c, &x, view);
                    println!("{isa:?} {m} × {k} × {n} ({name}): max relative error {err:.2e}");
                    // γ_k = k u / (1 − k u), u = 2⁻²⁴: the bound of any order of k f32 sums.
                    let bound = k as f64 * 2f64.powi(-24) / (1.0 - k as f64 * 2f64.powi(-24));
                    assert!(
                        err <= bound,
                        "{isa:?} {m} × {k} × {n} ({name}): {err:.2e} > {bound:.2e}"
                    );
                    // The cached panels give the same bits again.
                    assert_eq!(product_with(isa, x.view(), view, &cache).unwrap(), c);
                    match &first {
                        Some(f) => assert_eq!(f, &c, "{isa:?} differs from the first"),
                        None => first = Some(c),
                    }
                }
            }
        }
    }

    #[test]
    fn panel_products_decline_one_or_many_rows_and_do_not_depend_on_threads() {
        let w = filled(300, 100, 4);
        let cache = Panels::default();
        assert!(product(filled(MAX_ROWS + 1, 300, 5).view(), w.view(), &cache).is_none());
        assert!(product(filled(MIN_ROWS - 1, 300, 5).view(), w.view(), &cache).is_none());
        assert!(!cache.is_built(), "declined without copying the weight");
        let x = filled(20, 300, 6);
        for isa in Isa::all() {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| product_with(isa, x.view(), w.view(), &Panels::default()).unwrap())
            };
            let one = run(1);
            for t in [2, 3, 8] {
                assert_eq!(run(t), one, "{isa:?}, {t} threads");
            }
        }
    }

    #[test]
    fn many_tasks_can_meet_one_empty_cache() {
        // Every task finds the cache empty or being filled; none waits on another (the
        // copy runs on the same threads), and all get the same bits.
        if Isa::detect().is_none() {
            return;
        }
        let (x, w) = (filled(20, 700, 7), filled(700, 300, 8));
        let cache = Panels::default();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let out: Vec<Array2<f32>> = pool.install(|| {
            (0..64)
                .into_par_iter()
                .map(|_| product(x.view(), w.view(), &cache).unwrap())
                .collect()
        });
        assert!(cache.is_built());
        assert!(out.iter().all(|c| *c == out[0]));
    }

    #[test]
    fn the_environment_picks_a_kernel_or_none() {
        let both = [Isa::Avx512, Isa::Avx2];
        assert_eq!(Isa::choose(None, &both), Ok(Some(Isa::Avx512)));
        assert_eq!(Isa::choose(Some("auto"), &both), Ok(Some(Isa::Avx512)));
        assert_eq!(Isa::choose(Some("avx2"), &both), Ok(Some(Isa::Avx2)));
        assert_eq!(Isa::choose(Some("off"), &both), Ok(None));
        assert_eq!(Isa::choose(None, &[]), Ok(None));
        let err = Isa::choose(Some("avx2"), &[]).unwrap_err();
        assert!(
            err.contains("CIRCUITRY_PANELS=\"avx2\"") && err.contains("[]"),
            "{err}"
        );
        let err = Isa::choose(Some("fast"), &both).unwrap_err();
        assert!(err.contains("auto, off, or avx2"), "{err}");
    }

    #[test]
    #[should_panic(expected = "the cache holds panels of a 300 × 100 weight")]
    fn a_cache_belongs_to_one_weight() {
        if Isa::detect().is_none() {
            panic!("the cache holds panels of a 300 × 100 weight (no AVX2 or AVX-512 here)");
        }
        let cache = Panels::default();
        product(filled(2, 300, 1).view(), filled(300, 100, 2).view(), &cache).unwrap();
        product(filled(2, 300, 1).view(), filled(300, 99, 2).view(), &cache);
    }
}
