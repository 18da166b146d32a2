//! Intel MKL's `cblas_sgemm`/`cblas_dgemm`, loaded at run time (optional).
//!
//! `scripts/setup-mkl.sh` installs the libraries from the `mkl` PyPI wheel into the
//! project-local `.mkl/`. [`Mkl::load`] takes [`MklSettings`]: the library given there
//! (the `circuitry-train-sae` binary passes `$CIRCUITRY_MKL`: the path of
//! `libmkl_rt.so.3`, or the folder holding it), else `.mkl/` under the current
//! directory, then `.mkl/` at the root of the workspace this crate was built in. The
//! library is loaded once per process and stays loaded.
//!
//! Threads and determinism: MKL runs in its sequential threading layer, in
//! conditional numerical reproducibility (CNR) mode ([`CbwrMode`], `auto` unless
//! `--mkl-cbwr` says otherwise; the mode changes MKL's rounding, so a mode other
//! than the default is part of the SAE's run key), and the callers split each
//! product into blocks of the output whose boundaries depend only on the shapes;
//! rayon runs the blocks. So MKL uses the trainer's (rayon's) threads, and a product
//! is bitwise the same for any number of threads and any alignment of the arrays
//! (tests in `tests.rs` check both).
use std::ffi::{c_char, c_int, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The file [`Mkl::load`] opens.
pub const MKL_LIB: &str = "libmkl_rt.so.3";
/// The environment variable naming it (or its folder), read by the binary.
pub const MKL_ENV: &str = "CIRCUITRY_MKL";
/// The CNR mode used unless `--mkl-cbwr` says otherwise.
pub const DEFAULT_CBWR: &str = "auto";

/// A code path that MKL's conditional numerical reproducibility keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CbwrBranch {
    /// The best path this CPU supports (reproducible on this CPU).
    Auto,
    /// SSE2-era code, the same on every x86-64 CPU (slow).
    Compatible,
    /// The AVX2 path.
    Avx2,
    /// The AVX-512 path.
    Avx512,
}

/// MKL's conditional numerical reproducibility mode (`MKL_CBWR_Set`): `off`, or a
/// [`CbwrBranch`], optionally strict (bitwise results for any alignment of the
/// arrays too). Spelled as `--mkl-cbwr` takes it: `off`, `auto`, `compatible`,
/// `avx2`, `avx512`, each but `off` optionally followed by `+strict`. It changes
/// MKL's rounding, so it is part of an SAE's run key when it is not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CbwrMode {
    /// No CNR: MKL picks its code path per call.
    Off,
    /// CNR on `branch`.
    On {
        /// The code path.
        branch: CbwrBranch,
        /// `+strict`.
        strict: bool,
    },
}

impl Default for CbwrMode {
    /// `auto` ([`DEFAULT_CBWR`]).
    fn default() -> Self {
        CbwrMode::On {
            branch: CbwrBranch::Auto,
            strict: false,
        }
    }
}

impl CbwrMode {
    /// True for the default mode.
    pub fn is_default(&self) -> bool {
        *self == CbwrMode::default()
    }

    /// The `MKL_CBWR_Set` code; `None` for `off`.
    fn code(self) -> Option<c_int> {
        let CbwrMode::On { branch, strict } = self else {
            return None;
        };
        let base = match branch {
            CbwrBranch::Auto => 2,
            CbwrBranch::Compatible => 3,
            CbwrBranch::Avx2 => 10,
            CbwrBranch::Avx512 => 12,
        };
        Some(if strict { base | MKL_CBWR_STRICT } else { base })
    }
}

impl FromStr for CbwrMode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<CbwrMode, String> {
        let (base, strict) = match text.strip_suffix("+strict") {
            Some(b) => (b, true),
            None => (text, false),
        };
        let branch = match base {
            "off" if !strict => return Ok(CbwrMode::Off),
            "auto" => CbwrBranch::Auto,
            "compatible" => CbwrBranch::Compatible,
            "avx2" => CbwrBranch::Avx2,
            "avx512" => CbwrBranch::Avx512,
            _ => {
                return Err(format!(
                    "{text:?} is not an MKL CNR mode: write off, auto, compatible, avx2 or avx512, the last four optionally with +strict (e.g. avx2+strict)"
                ))
            }
        };
        Ok(CbwrMode::On { branch, strict })
    }
}

impl fmt::Display for CbwrMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CbwrMode::On { branch, strict } = self else {
            return f.write_str("off");
        };
        f.write_str(match branch {
            CbwrBranch::Auto => "auto",
            CbwrBranch::Compatible => "compatible",
            CbwrBranch::Avx2 => "avx2",
            CbwrBranch::Avx512 => "avx512",
        })?;
        if *strict {
            f.write_str("+strict")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for CbwrMode {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<CbwrMode, String> {
        text.parse()
    }
}

impl From<CbwrMode> for String {
    fn from(mode: CbwrMode) -> String {
        mode.to_string()
    }
}

/// Where MKL is loaded from and how it runs: what [`Mkl::load`] takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MklSettings {
    /// `libmkl_rt.so.3`, or the folder holding it; `None`: `.mkl/` under the current
    /// directory, then at the root of the workspace this crate was built in. Not
    /// serialised: where the library is changes no result by itself (its version
    /// is recorded in `training.json`'s `gemm`).
    #[serde(skip)]
    pub library: Option<PathBuf>,
    /// The CNR mode.
    #[serde(default)]
    pub cbwr: CbwrMode,
}

impl fmt::Display for MklSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.library {
            Some(p) => write!(f, "library {}", p.display())?,
            None => f.write_str("the library in .mkl/")?,
        }
        write!(f, " and CNR mode {}", self.cbwr)
    }
}

impl MklSettings {
    /// The settings with the library named by the value of `CIRCUITRY_MKL` as a binary
    /// read it (empty means unset) and the CNR mode `cbwr` (`--mkl-cbwr`).
    pub fn new(library: Option<OsString>, cbwr: CbwrMode) -> Self {
        MklSettings {
            library: library.filter(|v| !v.is_empty()).map(PathBuf::from),
            cbwr,
        }
    }

    /// True when nothing of these settings is recorded (the default CNR mode; the
    /// library is never recorded): `TrainConfig` then leaves them out, so records
    /// and run keys of runs made before the setting existed stay the same.
    pub fn records_nothing(&self) -> bool {
        self.cbwr.is_default()
    }
}

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;
const MKL_THREADING_SEQUENTIAL: c_int = 1;
const MKL_CBWR_STRICT: c_int = 0x10000;

/// A cblas product `(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
/// ldc)` with operands of type `T` and output (and `alpha`, `beta`) of type `O`.
type Cblas<T, O> = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    O,
    *const T,
    c_int,
    *const T,
    c_int,
    O,
    *mut O,
    c_int,
);
type Sgemm = Cblas<f32, f32>;
type Dgemm = Cblas<f64, f64>;
/// `cblas_gemm_bf16bf16f32`: bf16 operands (as their bits), f32 accumulation and output.
type GemmBf16 = Cblas<u16, f32>;
type SetInt = unsafe extern "C" fn(c_int) -> c_int;
type GetVersion = unsafe extern "C" fn(*mut c_char, c_int);

/// A loaded MKL: its products and what it is.
pub struct Mkl {
    sgemm: Sgemm,
    dgemm: Dgemm,
    /// Absent from MKL releases before 2020.
    gemm_bf16: Option<GemmBf16>,
    /// MKL's version string (`Intel(R) oneAPI Math Kernel Library Version ...`).
    pub version: String,
    /// The CNR mode in force.
    pub cbwr: CbwrMode,
    /// The library file.
    pub path: PathBuf,
    // Keeps the library mapped for as long as the process runs.
    _lib: libloading::Library,
}

impl std::fmt::Debug for Mkl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mkl")
            .field("version", &self.version)
            .field("cbwr", &self.cbwr)
            .field("path", &self.path)
            .finish()
    }
}

/// The settings of the first [`Mkl::load`] and what it loaded.
static LOADED: OnceLock<(MklSettings, std::result::Result<Mkl, String>)> = OnceLock::new();

impl Mkl {
    /// The process's MKL, loaded with `settings` on first use (see the module docs
    /// for where it is looked for). The error says where it looked and how to
    /// install it. MKL's threading layer and CNR mode can be set only before its
    /// first product, so a process loads it once: asking again with other settings
    /// is an error.
    pub fn load(settings: &MklSettings) -> Result<&'static Mkl> {
        let (first, loaded) = LOADED.get_or_init(|| {
            let loaded = Mkl::open_first(settings).map_err(|e| e.to_string());
            (settings.clone(), loaded)
        });
        if first != settings {
            return Err(Error::MklUnavailable {
                reason: format!(
                    "MKL was loaded in this process with {first} and cannot be loaded again with {settings}; use one setting per process"
                ),
            });
        }
        loaded.as_ref().map_err(|reason| Error::MklUnavailable {
            reason: reason.clone(),
        })
    }

    /// Whether this MKL has `cblas_gemm_bf16bf16f32` (MKL 2020 and later).
    pub fn has_bf16_gemm(&self) -> bool {
        self.gemm_bf16.is_some()
    }

    /// Whether MKL can be loaded with `settings` (loading it if not done yet).
    pub fn available(settings: &MklSettings) -> bool {
        Mkl::load(settings).is_ok()
    }

    fn candidates(library: Option<&Path>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(p) = library {
            out.push(if p.is_dir() {
                p.join(MKL_LIB)
            } else {
                p.to_path_buf()
            });
            return out;
        }
        out.push(Path::new(".mkl").join(MKL_LIB));
        // crates/sae → the workspace root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        out.push(root.join(".mkl").join(MKL_LIB));
        out
    }

    fn open_first(settings: &MklSettings) -> std::result::Result<Mkl, String> {
        let candidates = Mkl::candidates(settings.library.as_deref());
        let mut tried = Vec::new();
        for path in &candidates {
            if !path.is_file() {
                tried.push(format!("{} (not found)", path.display()));
                continue;
            }
            match Mkl::open(path, settings.cbwr) {
                Ok(m) => return Ok(m),
                Err(e) => tried.push(format!("{} ({e})", path.display())),
            }
        }
        Err(format!(
            "Intel MKL ({MKL_LIB}) could not be loaded; tried {}. Install it with \
             scripts/setup-mkl.sh (into .mkl/), or set {MKL_ENV} to the path of {MKL_LIB}; \
             or choose --gemm faer",
            tried.join(", ")
        ))
    }

    fn open(path: &Path, cbwr: CbwrMode) -> std::result::Result<Mkl, String> {
        // SAFETY: loading MKL runs its initialisers, which have no preconditions; the
        // symbols are looked up with the C signatures of MKL's documented API.
        unsafe {
            let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
            let set_layer: SetInt = symbol(&lib, b"MKL_Set_Threading_Layer\0")?;
            let cbwr_set: SetInt = symbol(&lib, b"MKL_CBWR_Set\0")?;
            let get_version: GetVersion = symbol(&lib, b"MKL_Get_Version_String\0")?;
            let sgemm: Sgemm = symbol(&lib, b"cblas_sgemm\0")?;
            let dgemm: Dgemm = symbol(&lib, b"cblas_dgemm\0")?;
            let gemm_bf16: Option<GemmBf16> = symbol(&lib, b"cblas_gemm_bf16bf16f32\0").ok();
            // Both must come before any computation.
            let layer = set_layer(MKL_THREADING_SEQUENTIAL);
            if layer != MKL_THREADING_SEQUENTIAL {
                return Err(format!(
                    "MKL refused its sequential threading layer (got {layer}); is libmkl_sequential.so.3 next to {MKL_LIB}?"
                ));
            }
            if let Some(mode) = cbwr.code() {
                let status = cbwr_set(mode);
                if status != 0 {
                    return Err(format!(
                        "MKL_CBWR_Set({cbwr}) failed with status {status} (this CPU may not support that mode); use --mkl-cbwr {DEFAULT_CBWR}"
                    ));
                }
            }
            let mut buf = vec![0 as c_char; 256];
            get_version(buf.as_mut_ptr(), buf.len() as c_int);
            let bytes: Vec<u8> = buf
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            let version = String::from_utf8_lossy(&bytes).trim().to_string();
            Ok(Mkl {
                sgemm,
                dgemm,
                gemm_bf16,
                version,
                cbwr,
                path: path.to_path_buf(),
                _lib: lib,
            })
        }
    }
}

/// How one operand is laid out for cblas: transposed or not, and its leading
/// dimension.
#[derive(Debug, Clone, Copy)]
pub(super) struct Operand {
    pub trans: bool,
    pub ld: usize,
}

impl Operand {
    /// The layout of a `(rows, cols)` view with `strides`, if cblas can read it in
    /// place (row-major with unit column stride, or its transpose).
    pub fn of(rows: usize, cols: usize, strides: &[isize]) -> Option<Operand> {
        let (s0, s1) = (strides[0], strides[1]);
        if let Some(ld) = row_major_ld(rows, cols, s0, s1) {
            return Some(Operand { trans: false, ld });
        }
        row_major_ld(cols, rows, s1, s0).map(|ld| Operand { trans: true, ld })
    }

    fn code(self) -> c_int {
        if self.trans {
            CBLAS_TRANS
        } else {
            CBLAS_NO_TRANS
        }
    }
}

/// The leading dimension of a `(rows, cols)` view with row stride `s_row` and column
/// stride `s_col`, if it is row-major with unit column stride (or degenerate).
fn row_major_ld(rows: usize, cols: usize, s_row: isize, s_col: isize) -> Option<usize> {
    if cols > 1 && s_col != 1 {
        return None;
    }
    let ld = if rows <= 1 {
        cols.max(1)
    } else {
        s_row.max(0) as usize
    };
    (ld >= cols.max(1)).then_some(ld)
}

/// One MKL product on raw parts: `c (m, n) = alpha a (m, k) b (k, n) + beta c`, with
/// operands of type `Self` and output of type `Out`.
pub(super) trait MklGemm: Sized {
    /// The output's (and `alpha`'s, `beta`'s) type.
    type Out;
    /// Whether this MKL has the product.
    fn supported(mkl: &Mkl) -> bool;
    /// # Safety
    /// The pointers must address arrays of the sizes that `m, n, k` and the
    /// operands' layouts imply; `c` must not overlap `a` or `b`. Sizes must fit `i32`.
    /// [`MklGemm::supported`] must be true.
    #[allow(clippy::too_many_arguments)]
    unsafe fn call(
        mkl: &Mkl,
        mnk: (usize, usize, usize),
        alpha: Self::Out,
        a: (*const Self, Operand),
        b: (*const Self, Operand),
        beta: Self::Out,
        c: (*mut Self::Out, usize),
    );
}

macro_rules! impl_mkl_gemm {
    ($t:ty, $out:ty, $bits:ty, $get:expr) => {
        impl MklGemm for $t {
            type Out = $out;
            fn supported(mkl: &Mkl) -> bool {
                $get(mkl).is_some()
            }
            unsafe fn call(
                mkl: &Mkl,
                (m, n, k): (usize, usize, usize),
                alpha: $out,
                a: (*const $t, Operand),
                b: (*const $t, Operand),
                beta: $out,
                c: (*mut $out, usize),
            ) {
                let Some(f) = $get(mkl) else {
                    return; // never: the caller checked `supported`
                };
                f(
                    CBLAS_ROW_MAJOR,
                    a.1.code(),
                    b.1.code(),
                    m as c_int,
                    n as c_int,
                    k as c_int,
                    alpha,
                    a.0.cast::<$bits>(),
                    a.1.ld as c_int,
                    b.0.cast::<$bits>(),
                    b.1.ld as c_int,
                    beta,
                    c.0,
                    c.1 as c_int,
                );
            }
        }
    };
}

impl_mkl_gemm!(f32, f32, f32, |m: &Mkl| Some(m.sgemm));
impl_mkl_gemm!(f64, f64, f64, |m: &Mkl| Some(m.dgemm));
// `half::bf16` is `repr(transparent)` over its `u16` bits, as MKL takes them.
impl_mkl_gemm!(half::bf16, f32, u16, |m: &Mkl| m.gemm_bf16);

/// Whether all sizes fit cblas's 32-bit integers.
pub(super) fn fits(sizes: &[usize]) -> bool {
    sizes.iter().all(|&s| s <= i32::MAX as usize)
}

/// The function `name` (NUL-terminated) of `lib`, as the pointer type `T`.
///
/// # Safety
/// `T` must be the C signature of that symbol.
unsafe fn symbol<T: Copy>(
    lib: &libloading::Library,
    name: &[u8],
) -> std::result::Result<T, String> {
    // SAFETY: the caller vouches for the signature.
    unsafe { lib.get::<T>(name).map(|f| *f).map_err(|e| e.to_string()) }
}
