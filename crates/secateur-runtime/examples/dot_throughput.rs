//! Multiply-accumulate throughput of one core by instruction, to decide which precisions pay:
//! f32 FMA, int8 `vpdpbusd` (AVX-512 VNNI) and bf16 `vdpbf16ps` (AVX-512 BF16), each on 24
//! independent 512-bit accumulators (no dependency stalls), printed as instructions and
//! multiply-accumulates per second. `dot_throughput` (no arguments); instructions the CPU lacks
//! are skipped.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const ACC: usize = 24;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); ACC];
        let (a, b) = (_mm512_set1_ps(1.0), _mm512_set1_ps(1e-9));
        for _ in 0..n {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(a, b, *v);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn vnni(n: usize) -> i32 {
        let mut acc = [_mm512_setzero_si512(); ACC];
        let (a, b) = (
            _mm512_set1_epi32(0x0101_0101),
            _mm512_set1_epi32(0x0101_0101),
        );
        for _ in 0..n {
            for v in acc.iter_mut() {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_epi32(*v)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); ACC];
        // 1.0 in bf16, twice per 32-bit lane
        let one: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80)) };
        for _ in 0..n {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, one, one);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    pub const PER_INSTRUCTION: [(&str, &str, f64); 3] = [
        ("f32 FMA", "avx512f", 16.0),
        ("int8 vpdpbusd", "avx512vnni", 64.0),
        ("bf16 vdpbf16ps", "avx512bf16", 32.0),
    ];
    pub const ACCUMULATORS: usize = ACC;
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        use std::time::Instant;
        let n = 10_000_000;
        for (name, feature, macs) in x86::PER_INSTRUCTION {
            let present = match feature {
                "avx512f" => std::is_x86_feature_detected!("avx512f"),
                "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
                _ => std::is_x86_feature_detected!("avx512bf16"),
            };
            if !present {
                println!("{name:16} not on this CPU");
                continue;
            }
            let t = Instant::now();
            // SAFETY: the instruction set was detected just above.
            let sink = unsafe {
                match feature {
                    "avx512f" => x86::fma(n) as f64,
                    "avx512vnni" => x86::vnni(n) as f64,
                    _ => x86::bf16(n) as f64,
                }
            };
            let per_s = (n * x86::ACCUMULATORS) as f64 / t.elapsed().as_secs_f64();
            println!(
                "{name:16} {:.2} G instructions/s, {:.0} G multiply-accumulates/s (checksum {sink:.3e})",
                per_s / 1e9,
                per_s * macs / 1e9
            );
        }
    }
}
