//! Times forward+backward of LeNet's two convolutions with burn's conv2d and with an
//! unfold (im2col) + matmul formulation, to choose the faster training path.
use burn::tensor::module::{conv2d, unfold4d};
use burn::tensor::ops::{ConvOptions, UnfoldOptions};
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, mut f: F) {
    f();
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name}: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

fn main() {
    let dev = secateur_train::cpu();
    let _ad = dev.clone().autodiff();
    for (cin, cout, hw) in [(1usize, 32usize, 28usize), (32, 64, 12)] {
        let x = Tensor::<4>::random([128, cin, hw, hw], Distribution::Default, &dev);
        let w0 = Tensor::<4>::random([cout, cin, 5, 5], Distribution::Default, &dev);
        let ho = hw - 4;
        time(&format!("conv2d fwd {cin}->{cout}"), || {
            let _ = conv2d(
                x.clone(),
                w0.clone(),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            )
            .into_data();
        });
        time(&format!("conv2d fwd+bwd(w) {cin}->{cout}"), || {
            let w = w0.clone().autodiff().require_grad();
            let y = conv2d(
                x.clone().autodiff(),
                w.clone(),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            );
            let g = y.sum().backward();
            let _ = w.grad(&g).unwrap().into_data();
        });
        time(&format!("conv2d fwd+bwd(w,x) {cin}->{cout}"), || {
            let w = w0.clone().autodiff().require_grad();
            let xa = x.clone().autodiff().require_grad();
            let y = conv2d(
                xa.clone(),
                w.clone(),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            );
            let g = y.sum().backward();
            let _ = w.grad(&g).unwrap().into_data();
            let _ = xa.grad(&g).unwrap().into_data();
        });
        time(&format!("unfold+matmul fwd+bwd(w,x) {cin}->{cout}"), || {
            let w = w0.clone().autodiff().require_grad();
            let xa = x.clone().autodiff().require_grad();
            let cols = unfold4d(
                xa.clone(),
                [5, 5],
                UnfoldOptions::new([1, 1], [0, 0], [1, 1]),
            ); // [N, C*25, L]
            let wm = w.clone().reshape([1, cout, cin * 25]);
            let y = wm.matmul(cols).reshape([128, cout, ho, ho]);
            let g = y.sum().backward();
            let _ = w.grad(&g).unwrap().into_data();
            let _ = xa.grad(&g).unwrap().into_data();
        });
    }
}
