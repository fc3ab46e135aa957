//! The Burn backends compiled into burn-zoo, and how a user picks one by name at run time.
//!
//! Backends are chosen at build time with cargo features (`flex`, `ndarray`, `wgpu`, `vulkan`,
//! `webgpu`, `cuda`); several may be compiled in at once. At run time [`with_backend!`] runs a
//! block of code generic over `B: Backend` on the [`BackendKind`] the user named: the block is
//! monomorphised once per compiled-in backend.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

/// A backend the zoo knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// burn-flex: the fast pure-Rust CPU backend.
    Flex,
    /// burn-ndarray: the reference CPU backend.
    NdArray,
    /// wgpu with its automatic graphics API (Vulkan, Metal, DX12; lavapipe on CPU-only Linux).
    Wgpu,
    /// wgpu forced onto Vulkan, compiling kernels to SPIR-V.
    Vulkan,
    /// wgpu with WGSL kernels, as in a browser.
    WebGpu,
    /// CUDA through cubecl (the driver is loaded at run time).
    Cuda,
}

impl BackendKind {
    /// Every backend the zoo knows, in the order `auto` considers them (GPUs first).
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Cuda,
        BackendKind::Vulkan,
        BackendKind::Wgpu,
        BackendKind::WebGpu,
        BackendKind::Flex,
        BackendKind::NdArray,
    ];

    /// The name users type (`--backend NAME`, `ZOO_BACKEND`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::WebGpu => "webgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this backend was compiled into the binary.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Vulkan => cfg!(feature = "vulkan"),
            BackendKind::WebGpu => cfg!(feature = "webgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether the backend runs on a GPU API (it may still be a software driver such as lavapipe).
    pub fn is_gpu(self) -> bool {
        !matches!(self, BackendKind::Flex | BackendKind::NdArray)
    }

    /// The backends compiled into this binary.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for: one backend by name, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// The first compiled-in backend that opens a real GPU, else flex, else ndarray.
    Auto,
    /// Exactly this backend.
    Named(BackendKind),
}

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The name is not one the zoo knows.
    #[error(
        "unknown backend `{0}`: expected one of auto, flex, ndarray, wgpu, vulkan, webgpu, cuda"
    )]
    Unknown(String),
    /// The backend exists but this binary was built without it.
    #[error(
        "backend `{name}` is not compiled into this binary (compiled in: {compiled}); rebuild with `--features {name}`"
    )]
    NotCompiled {
        /// The backend asked for.
        name: &'static str,
        /// The backends that are compiled in, comma separated.
        compiled: String,
    },
    /// The backend is compiled in but could not open a device here.
    #[error("backend `{name}` could not open a device: {reason}")]
    NoDevice {
        /// The backend asked for.
        name: &'static str,
        /// What went wrong, as the backend said it.
        reason: String,
    },
    /// `auto` found nothing usable (only possible when no CPU backend is compiled in).
    #[error("no compiled-in backend could open a device (compiled in: {0})")]
    NothingUsable(String),
}

fn compiled_list() -> String {
    let names: Vec<&str> = BackendKind::compiled().iter().map(|k| k.name()).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = BackendError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let kind = match name.trim().to_ascii_lowercase().as_str() {
            "auto" => return Ok(BackendChoice::Auto),
            "flex" | "cpu" => BackendKind::Flex,
            "ndarray" => BackendKind::NdArray,
            "wgpu" => BackendKind::Wgpu,
            "vulkan" => BackendKind::Vulkan,
            "webgpu" => BackendKind::WebGpu,
            "cuda" => BackendKind::Cuda,
            _ => return Err(BackendError::Unknown(name.to_string())),
        };
        Ok(BackendChoice::Named(kind))
    }
}

/// The choice from a `--backend` flag, else from `ZOO_BACKEND`, else `auto`.
pub fn choice_from(flag: Option<&str>) -> Result<BackendChoice, BackendError> {
    match flag {
        Some(name) => name.parse(),
        None => match std::env::var("ZOO_BACKEND") {
            Ok(name) if !name.trim().is_empty() => name.parse(),
            _ => Ok(BackendChoice::Auto),
        },
    }
}

/// Runs a block of code generic over the backend on the backend `kind` names: the block is
/// compiled once per backend compiled into this crate, with `B` bound to that backend type and
/// `device` to its default device. Evaluates to `Ok(value of the block)`, or
/// `Err(BackendError::NotCompiled)` for a backend this build lacks.
///
/// ```ignore
/// let logits = zoo_backends::with_backend!(kind, |B, device| {
///     let lm = burn_zoo::open::<B>(&path, &device)?;
///     lm.forward_rows(&ids, Logits::All)?
/// })?;
/// ```
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, |$B:ident, $device:ident| $body:block) => {{
        let kind: $crate::BackendKind = $kind;
        // One branch per compiled-in backend; each leaves the block, so the body may move
        // what it uses.
        #[allow(unreachable_code)]
        'dispatch: {
            $crate::__if_flex! {
                if kind == $crate::BackendKind::Flex {
                    #[allow(dead_code)]
                    type $B = $crate::Flex;
                    #[allow(unused_variables)]
                    let $device = $crate::default_device::<$B>(kind);
                    break 'dispatch ::std::result::Result::Ok($body);
                }
            }
            $crate::__if_ndarray! {
                if kind == $crate::BackendKind::NdArray {
                    #[allow(dead_code)]
                    type $B = $crate::NdArray;
                    #[allow(unused_variables)]
                    let $device = $crate::default_device::<$B>(kind);
                    break 'dispatch ::std::result::Result::Ok($body);
                }
            }
            $crate::__if_wgpu! {
                if kind == $crate::BackendKind::Wgpu {
                    #[allow(dead_code)]
                    type $B = $crate::Wgpu;
                    #[allow(unused_variables)]
                    let $device = $crate::default_device::<$B>(kind);
                    break 'dispatch ::std::result::Result::Ok($body);
                }
            }
            $crate::__if_vulkan! {
                if kind == $crate::BackendKind::Vulkan {
                    #[allow(dead_code)]
                    type $B = $crate::Vulkan;
                    #[allow(unused_variables)]
                    let $device = $crate::default_device::<$B>(kind);
                    break 'dispatch ::std::result::Result::Ok($body);
                }
            }
            $crate::__if_webgpu! {
                if kind == $crate::BackendKind::WebGpu {
                    #[allow(dead_code)]
                    type $B = $crate::WebGpu;
                    #[allow(unused_variables)]
                    let $device = $crate::default_device::<$B>(kind);
                    break 'dispatch ::std::result::Result::Ok($body);
                }
            }
            $crate::__if_cuda! {
                if kind == $crate::BackendKind::Cuda {
                    #[allow(dead_code)]
                    type $B = $crate::Cuda;
                    #[allow(unused_variables)]
                    let $device = $crate::default_device::<$B>(kind);
                    break 'dispatch ::std::result::Result::Ok($body);
                }
            }
            ::std::result::Result::Err($crate::not_compiled(kind))
        }
    }};
}

/// Like [`with_backend!`], with `B` bound to the autodiff backend `Autodiff<backend>` (training).
#[cfg(feature = "autodiff")]
#[macro_export]
macro_rules! with_autodiff_backend {
    ($kind:expr, |$B:ident, $device:ident| $body:block) => {
        $crate::with_backend!($kind, |Inner, $device| {
            #[allow(dead_code)]
            type $B = $crate::burn::backend::Autodiff<Inner>;
            $body
        })
    };
}

/// Expands its input only when the `flex` backend is compiled in.
#[cfg(feature = "flex")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_flex {
    ($($t:tt)*) => { $($t)* };
}
/// Expands its input only when the `flex` backend is compiled in.
#[cfg(not(feature = "flex"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_flex {
    ($($t:tt)*) => {};
}

/// Expands its input only when the `ndarray` backend is compiled in.
#[cfg(feature = "ndarray")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_ndarray {
    ($($t:tt)*) => { $($t)* };
}
/// Expands its input only when the `ndarray` backend is compiled in.
#[cfg(not(feature = "ndarray"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_ndarray {
    ($($t:tt)*) => {};
}

/// Expands its input only when the `wgpu` backend is compiled in.
#[cfg(feature = "wgpu")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_wgpu {
    ($($t:tt)*) => { $($t)* };
}
/// Expands its input only when the `wgpu` backend is compiled in.
#[cfg(not(feature = "wgpu"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_wgpu {
    ($($t:tt)*) => {};
}

/// Expands its input only when the `vulkan` backend is compiled in.
#[cfg(feature = "vulkan")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_vulkan {
    ($($t:tt)*) => { $($t)* };
}
/// Expands its input only when the `vulkan` backend is compiled in.
#[cfg(not(feature = "vulkan"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_vulkan {
    ($($t:tt)*) => {};
}

/// Expands its input only when the `webgpu` backend is compiled in.
#[cfg(feature = "webgpu")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_webgpu {
    ($($t:tt)*) => { $($t)* };
}
/// Expands its input only when the `webgpu` backend is compiled in.
#[cfg(not(feature = "webgpu"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_webgpu {
    ($($t:tt)*) => {};
}

/// Expands its input only when the `cuda` backend is compiled in.
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_cuda {
    ($($t:tt)*) => { $($t)* };
}
/// Expands its input only when the `cuda` backend is compiled in.
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_cuda {
    ($($t:tt)*) => {};
}

#[doc(hidden)]
pub use burn;

/// The flex backend type.
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex;
/// The ndarray backend type.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray;
/// The wgpu backend type (automatic graphics API).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
/// The wgpu backend forced onto Vulkan.
#[cfg(feature = "vulkan")]
pub type Vulkan = burn::backend::Vulkan;
/// The wgpu backend with WGSL kernels.
#[cfg(feature = "webgpu")]
pub type WebGpu = burn::backend::WebGpu;
/// The CUDA backend.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// The device `kind` runs on by default (the default wgpu adapter, the first CUDA device).
#[doc(hidden)]
pub fn default_device<B: Backend>(_kind: BackendKind) -> B::Device {
    B::Device::default()
}

/// The error for a backend this build lacks.
#[doc(hidden)]
pub fn not_compiled(kind: BackendKind) -> BackendError {
    BackendError::NotCompiled {
        name: kind.name(),
        compiled: compiled_list(),
    }
}

/// Adds 1 + 2 on the device and reads the answer back: the cheapest proof a device works.
fn probe_on<B: Backend>(device: B::Device) -> Result<String, String> {
    let description = format!("{device:?}");
    let result = catch_unwind(AssertUnwindSafe(|| {
        let t = Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
        let sum: f64 = t.sum().into_scalar().elem();
        sum
    }));
    match result {
        Ok(sum) if (sum - 3.0f64).abs() < 1e-6 => Ok(description),
        Ok(sum) => Err(format!("1 + 2 gave {sum}")),
        Err(panic) => Err(panic_message(panic.as_ref())),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the backend panicked while opening its device".to_string()
    }
}

/// Opens `kind`'s default device and runs one tiny computation; returns a device description.
///
/// Backends panic when they find no device (no driver, no adapter); the panic is caught and the
/// panic message is silenced on this thread for the duration, so the caller decides what to
/// print.
pub fn probe(kind: BackendKind) -> Result<String, BackendError> {
    if kind.is_compiled() && kind.is_gpu() && kind != BackendKind::Cuda {
        // Opens the wgpu device the way `wgpu_adapter` can still describe it afterwards.
        let _ = wgpu_adapter();
    }
    let outcome = silenced(|| {
        catch_unwind(AssertUnwindSafe(|| {
            with_backend!(kind, |B, device| { probe_on::<B>(device) })
        }))
    });
    match outcome {
        Ok(Ok(Ok(device))) => Ok(device),
        Ok(Ok(Err(reason))) => Err(BackendError::NoDevice {
            name: kind.name(),
            reason,
        }),
        Ok(Err(not_compiled)) => Err(not_compiled),
        Err(panic) => Err(BackendError::NoDevice {
            name: kind.name(),
            reason: panic_message(panic.as_ref()),
        }),
    }
}

/// Turns a choice into the backend to use: a named one must open its device; `auto` takes CUDA
/// if it opens a device, then a wgpu-family backend if its default adapter is GPU hardware
/// (never a CPU emulation such as lavapipe, which is slower than flex; see [`Adapter`]), then
/// flex, then ndarray.
pub fn resolve(choice: BackendChoice) -> Result<BackendKind, BackendError> {
    match choice {
        BackendChoice::Named(kind) => {
            probe(kind)?;
            Ok(kind)
        }
        BackendChoice::Auto => {
            for kind in BackendKind::compiled() {
                let usable = match kind {
                    BackendKind::Wgpu | BackendKind::Vulkan | BackendKind::WebGpu => {
                        wgpu_adapter().is_ok_and(|adapter| adapter.is_hardware())
                    }
                    _ => probe(kind).is_ok(),
                };
                if usable {
                    return Ok(kind);
                }
            }
            Err(BackendError::NothingUsable(compiled_list()))
        }
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with panic messages of this thread silenced (backends panic when they find no
/// device). The hook is installed once, the first time, and passes every other panic on to the
/// hook that was there before: swapping the process-wide hook in and out for each probe, as
/// this did, raced when two threads probed at once (tests run in parallel) and could leave the
/// silent hook installed for good, so later panics — test failures included — printed nothing.
fn silenced<R>(f: impl FnOnce() -> R) -> R {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    struct Loud(bool);
    impl Drop for Loud {
        fn drop(&mut self) {
            QUIET.with(|q| q.set(self.0));
        }
    }
    let _restore = Loud(QUIET.with(|q| q.replace(true)));
    f()
}

/// The adapter a wgpu-family backend runs on: what `auto` looks at, and what `zoo backends` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The adapter's name (`NVIDIA H100 80GB HBM3`, `llvmpipe (LLVM 19.1.7, 256 bits)`).
    pub name: String,
    /// wgpu's device type: `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    /// The graphics API (`Vulkan`, `Metal`, `Dx12`, `Gl`, `BrowserWebGpu`).
    pub api: String,
    /// The driver's name and version, as the driver reports them.
    pub driver: String,
}

impl Adapter {
    /// Whether this is GPU hardware rather than a CPU emulation (lavapipe, SwiftShader, WARP),
    /// which is slower than the flex backend and so never chosen by `auto`.
    pub fn is_hardware(&self) -> bool {
        matches!(
            self.device_type.as_str(),
            "DiscreteGpu" | "IntegratedGpu" | "VirtualGpu"
        )
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.device_type, self.api)?;
        if !self.driver.trim().is_empty() {
            write!(f, ", driver {}", self.driver.trim())?;
        }
        f.write_str(")")
    }
}

/// The adapter wgpu's default device opens (the highest-performance one it finds), or why none
/// opens. Asked once per process, before anything else uses the wgpu device, and remembered.
pub fn wgpu_adapter() -> Result<Adapter, BackendError> {
    static ADAPTER: std::sync::OnceLock<Result<Adapter, String>> = std::sync::OnceLock::new();
    ADAPTER
        .get_or_init(|| {
            silenced(|| {
                catch_unwind(open_wgpu_adapter).unwrap_or_else(|p| Err(panic_message(p.as_ref())))
            })
        })
        .clone()
        .map_err(|reason| BackendError::NoDevice {
            name: "wgpu",
            reason,
        })
}

#[cfg(feature = "wgpu")]
fn open_wgpu_adapter() -> Result<Adapter, String> {
    use burn::backend::wgpu::{graphics::AutoGraphicsApi, init_setup, RuntimeOptions, WgpuDevice};
    // Registers the default device's server, exactly as its first use would.
    let setup =
        init_setup::<AutoGraphicsApi>(&WgpuDevice::DefaultDevice, RuntimeOptions::default());
    let info = setup.adapter.get_info();
    Ok(Adapter {
        name: info.name.clone(),
        device_type: format!("{:?}", info.device_type),
        api: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info),
    })
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu_adapter() -> Result<Adapter, String> {
    Err(not_compiled(BackendKind::Wgpu).to_string())
}

/// The backends a test suite must cover: those named in `ZOO_TEST_BACKENDS` (comma separated;
/// each must be compiled in and open its device, or this fails with the reason), else every
/// compiled-in backend that opens a device here.
pub fn test_backends() -> Result<Vec<BackendKind>, BackendError> {
    match std::env::var("ZOO_TEST_BACKENDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| match name.parse::<BackendChoice>()? {
                BackendChoice::Named(kind) => {
                    probe(kind)?;
                    Ok(kind)
                }
                BackendChoice::Auto => resolve(BackendChoice::Auto),
            })
            .collect(),
        _ => Ok(BackendKind::compiled()
            .into_iter()
            .filter(|&kind| probe(kind).is_ok())
            .collect()),
    }
}

/// Absolute tolerance for comparing f32 outputs of small models with a PyTorch reference on
/// `kind`: 1e-4 on the CPU backends; GPU backends reorder reductions and may use fused
/// multiply-add or fast-math transcendental functions, so they get 1e-3.
pub fn tolerance(kind: BackendKind) -> f32 {
    if kind.is_gpu() {
        1e-3
    } else {
        1e-4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(
                kind.name().parse::<BackendChoice>().unwrap(),
                BackendChoice::Named(kind)
            );
        }
        assert_eq!(
            "auto".parse::<BackendChoice>().unwrap(),
            BackendChoice::Auto
        );
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = "tpu".parse::<BackendChoice>().unwrap_err();
        assert!(err.to_string().contains("unknown backend `tpu`"), "{err}");
    }

    #[test]
    fn missing_backend_names_the_feature() {
        for kind in BackendKind::ALL {
            if !kind.is_compiled() {
                let err = with_backend!(kind, |B, device| { probe_on::<B>(device) }).unwrap_err();
                assert!(err
                    .to_string()
                    .contains(&format!("--features {}", kind.name())));
            }
        }
    }
}
