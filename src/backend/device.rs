//! Which device to run on: `--device auto|cpu|cuda[:N]`. Always compiled;
//! the CUDA probes come from `backend::cuda` when the `cuda` feature is on,
//! and say the build has no CUDA support otherwise.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A device request (`Auto`) or a resolved device (`Cpu`, `Cuda(n)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// CUDA device 0 when a driver and a device are present, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl Device {
    /// Parses `auto`, `cpu`, `cuda` (device 0) or `cuda:N`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => {
                let n = t
                    .strip_prefix("cuda:")
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        Error::Invalid(format!("device {s:?}: expected auto, cpu, cuda or cuda:N"))
                    })?;
                Ok(Device::Cuda(n))
            }
        }
    }

    /// Turns `Auto` into `Cpu` or `Cuda(0)`, and checks that a requested CUDA
    /// device exists ("no CUDA device 1: 1 device present").
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Cpu => Ok(Device::Cpu),
            Device::Auto => Ok(if cuda_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            Device::Cuda(n) => {
                let count = cuda_device_count()?;
                if n < count {
                    Ok(Device::Cuda(n))
                } else {
                    Err(no_such_device(n, count))
                }
            }
        }
    }
}

impl FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Device::parse(s)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => write!(f, "auto"),
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

pub(crate) fn no_such_device(n: usize, count: usize) -> Error {
    Error::Cuda(format!(
        "no CUDA device {n}: {count} device{} present",
        if count == 1 { "" } else { "s" }
    ))
}

/// True when libcuda loads, initialises and reports at least one device,
/// and cuBLAS/cuBLASLt are loadable: what `--device auto` needs to pick CUDA.
pub fn cuda_available() -> bool {
    cuda_unavailable_reason().is_none()
}

/// Why `--device auto` would fall back to the CPU, or None when CUDA is usable.
pub fn cuda_unavailable_reason() -> Option<String> {
    match cuda_device_count() {
        Ok(0) => return Some("the CUDA driver reports no device".into()),
        Ok(_) => {}
        Err(e) => return Some(e.to_string()),
    }
    blas_present().err().map(|e| e.to_string())
}

/// The number of CUDA devices, or why CUDA cannot be used.
pub fn cuda_device_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        super::cuda::driver_probe::device_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Cuda(
            "this build has no CUDA support (cargo feature `cuda` is off)".into(),
        ))
    }
}

fn blas_present() -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        super::cuda::driver_probe::blas_present()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(Device::parse("auto").unwrap(), Device::Auto);
        assert_eq!(Device::parse("CPU").unwrap(), Device::Cpu);
        assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
        assert_eq!(Device::parse("cuda:3").unwrap(), Device::Cuda(3));
        assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
        for bad in ["", "cuda:", "cuda:x", "tpu", "cuda:-1"] {
            let e = Device::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {e}"
            );
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn auto_resolves_to_something_runnable() {
        let d = Device::Auto.resolve().unwrap();
        assert_eq!(d == Device::Cpu, !cuda_available());
        assert_eq!(Device::Cpu.resolve().unwrap(), Device::Cpu);
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        match cuda_device_count() {
            Ok(n) => {
                let e = Device::Cuda(n).resolve().unwrap_err().to_string();
                assert!(e.contains(&format!("no CUDA device {n}")), "{e}");
            }
            Err(e) => {
                let msg = Device::Cuda(0).resolve().unwrap_err().to_string();
                assert_eq!(msg, e.to_string());
                assert!(msg.starts_with("CUDA: "), "{msg}");
            }
        }
        assert_eq!(
            no_such_device(1, 1).to_string(),
            "CUDA: no CUDA device 1: 1 device present"
        );
    }
}
