//! Training behaviour: learning on real data, determinism, masks that stay zero through
//! optimizer steps, checkpoint/resume equivalence, distillation, and clear errors.

use secateur_data::{Normalization, load_mini};
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Mask, MaskPattern};
use secateur_train::checkpoint;
use secateur_train::*;

fn mini() -> secateur_data::Split {
    load_mini().unwrap()
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn lenet_learns_fashion_mnist_mini() {
    let data = mini();
    let g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let before = evaluate(&g, &data.test, &data.normalization, 256, &cpu(), None).unwrap();
    let mut t = Trainer::new(g, cfg(1), cpu()).unwrap();
    t.fit(&data.train, &data.normalization, &mut NoHook, &mut |_| {})
        .unwrap();
    let g = t.into_graph().unwrap();
    let after = evaluate(&g, &data.test, &data.normalization, 256, &cpu(), None).unwrap();
    assert!(
        before.accuracy < 0.3,
        "untrained accuracy {}",
        before.accuracy
    );
    // one epoch on 5000 images: PyTorch reaches about 0.78 with this recipe
    assert!(
        after.accuracy > 0.72,
        "accuracy after one epoch: {}",
        after.accuracy
    );
    assert!(after.loss < before.loss);
    assert_eq!(after.per_class_accuracy.len(), 10);
}

#[test]
fn same_seed_same_weights_and_masks_stay_zero() {
    let data = mini();
    let small = data.train.take(1024);
    let mut g = zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap();
    let w = g.initializers["fc1.weight"].clone();
    let keep: Vec<bool> = (0..w.len()).map(|i| i % 4 == 0).collect();
    g.masks.insert(
        "fc1.weight".into(),
        Mask {
            keep: keep.clone(),
            pattern: MaskPattern::Unstructured,
            out_axis: 0,
        },
    );
    g.apply_masks().unwrap();
    let run = |g: secateur_graph::Graph, opt: OptimizerConfig| {
        let mut c = cfg(7); // 7 epochs x 16 batches = 112 optimizer steps
        c.optimizer = opt;
        let mut t = Trainer::new(g, c, cpu()).unwrap();
        t.fit(&small, &data.normalization, &mut NoHook, &mut |_| {})
            .unwrap();
        assert!(t.steps_done >= 100);
        t.into_graph().unwrap()
    };
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: true,
        },
        lr: 0.05,
        weight_decay: 5e-4,
    };
    let mut adamw = OptimizerConfig::adam(1e-3);
    adamw.kind = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    adamw.weight_decay = 1e-2;
    for opt in [sgd, adamw] {
        let a = run(g.clone(), opt);
        let b = run(g.clone(), opt);
        assert_eq!(
            a.initializers, b.initializers,
            "same seed must give identical weights"
        );
        let trained = &a.initializers["fc1.weight"];
        for (i, (&k, v)) in keep.iter().zip(trained.data()).enumerate() {
            if !k {
                assert_eq!(*v, 0.0, "masked weight {i} became {v}");
            }
        }
        assert!(
            trained
                .data()
                .iter()
                .zip(&keep)
                .any(|(v, &k)| k && *v != w.data()[0])
        );
        a.check().unwrap();
    }
}

#[test]
fn resume_from_checkpoint_equals_uninterrupted_run() {
    let data = mini();
    let small = data.train.take(512);
    let g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let mut whole = Trainer::new(g.clone(), cfg(2), cpu()).unwrap();
    whole
        .fit(&small, &data.normalization, &mut NoHook, &mut |_| {})
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck.safetensors");
    struct StopAfterOne(std::path::PathBuf);
    impl TrainHook for StopAfterOne {
        fn after_epoch(&mut self, _e: usize, t: &mut Trainer) -> Result<()> {
            checkpoint::save(t, &self.0)?;
            Err(TrainError::Config("simulated kill".into()))
        }
    }
    let mut first = Trainer::new(g.clone(), cfg(2), cpu()).unwrap();
    assert!(
        first
            .fit(
                &small,
                &data.normalization,
                &mut StopAfterOne(ck.clone()),
                &mut |_| {}
            )
            .is_err()
    );
    let mut resumed = Trainer::new(g, cfg(2), cpu()).unwrap();
    checkpoint::load(&mut resumed, &ck).unwrap();
    assert_eq!(resumed.epochs_done, 1);
    resumed
        .fit(&small, &data.normalization, &mut NoHook, &mut |_| {})
        .unwrap();
    assert_eq!(
        whole.into_graph().unwrap().initializers,
        resumed.into_graph().unwrap().initializers
    );
    // a checkpoint for a different configuration is refused
    let other = Trainer::new(
        zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap(),
        cfg(3),
        cpu(),
    )
    .unwrap();
    let mut other = other;
    let e = checkpoint::load(&mut other, &ck).unwrap_err().to_string();
    assert!(e.contains("different training configuration"), "{e}");
}

#[test]
fn distillation_trains_toward_the_teacher() {
    let data = mini();
    let small = data.train.take(1024);
    let teacher = zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap();
    let mut t = Trainer::new(teacher, cfg(2), cpu()).unwrap();
    t.fit(&small, &data.normalization, &mut NoHook, &mut |_| {})
        .unwrap();
    let teacher = t.into_graph().unwrap();
    let mut c = cfg(2);
    c.distill = Some(DistillConfig {
        temperature: 4.0,
        alpha: 0.9,
    });
    let student = zoo::build(
        ZooModel::Mlp,
        &ZooConfig {
            seed: 99,
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Trainer::new(student, c, cpu()).unwrap();
    s.set_teacher(teacher.clone()).unwrap();
    s.fit(&small, &data.normalization, &mut NoHook, &mut |_| {})
        .unwrap();
    let student = s.into_graph().unwrap();
    let test = data.test.take(500);
    let rt = evaluate(&teacher, &test, &data.normalization, 250, &cpu(), None).unwrap();
    let rs = evaluate(&student, &test, &data.normalization, 250, &cpu(), None).unwrap();
    assert!(
        rs.agreement(&rt).unwrap() > 0.8,
        "agreement {}",
        rs.agreement(&rt).unwrap()
    );
}

#[test]
fn clear_errors() {
    let data = mini();
    let rgb = zoo::build(
        ZooModel::Lenet5Bn,
        &ZooConfig {
            channels: 3,
            height: 32,
            width: 32,
            ..Default::default()
        },
    )
    .unwrap();
    let mut t = Trainer::new(rgb, cfg(1), cpu()).unwrap();
    let e = t
        .fit(&data.train, &data.normalization, &mut NoHook, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[N, 3, 32, 32]") && e.contains("[1, 28, 28]"),
        "{e}"
    );

    let mut c = cfg(1);
    c.optimizer = OptimizerConfig {
        kind: OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        lr: 1e6,
        weight_decay: 0.0,
    };
    let g = zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap();
    let mut t = Trainer::new(g, c, cpu()).unwrap();
    let e = t
        .fit(
            &data.train.take(2048),
            &Normalization::fashion_mnist(),
            &mut NoHook,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("diverged") && e.contains("learning rate"), "{e}");

    let mut bad = cfg(1);
    bad.batch_size = 1;
    assert!(
        Trainer::new(
            zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap(),
            bad,
            cpu()
        )
        .is_err()
    );
}
