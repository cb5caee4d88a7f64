//! Instruction-set selection for the kernels: AVX-512, AVX2 + FMA, or portable code, detected
//! at run time. Kernels are written once as `#[inline(always)]` generic bodies over fixed-size
//! chunks and instantiated inside `#[target_feature]` functions, so the compiler vectorises the
//! same code for each instruction set; tests run every available path against the reference.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An instruction set a kernel can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
        }
        v.push(Isa::Portable);
        v
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        })
    }
}

/// Defines `$name(isa, args...)` that runs the `#[inline(always)]` body `$body::<..., FMA>`
/// compiled for the requested instruction set (`FMA = false` on the portable path, where a
/// fused multiply-add would be a slow library call). Generic parameters are given as
/// `[declarations][arguments]`.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident [$($gen:tt)*] [$($garg:tt)*] ($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        $vis fn $name<$($gen)*>(isa: $crate::kernels::isa::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                $(#[$meta])*
                unsafe fn avx512<$($gen)*>($($arg: $ty),*) {
                    $body::<$($garg)* true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                $(#[$meta])*
                unsafe fn avx2<$($gen)*>($($arg: $ty),*) {
                    $body::<$($garg)* true>($($arg),*)
                }
                match isa {
                    // SAFETY: the instruction set was detected on this CPU (Isa::detect /
                    // Isa::available), which is the only way callers obtain these variants.
                    $crate::kernels::isa::Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => return unsafe { avx512::<$($garg)*>($($arg),*) },
                    $crate::kernels::isa::Isa::Avx2 if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") => return unsafe { avx2::<$($garg)*>($($arg),*) },
                    _ => {}
                }
            }
            let _ = isa;
            $body::<$($garg)* false>($($arg),*)
        }
    };
}
pub(crate) use dispatch;
