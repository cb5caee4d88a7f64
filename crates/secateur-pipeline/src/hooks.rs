//! Training hooks that run pruning schedules inside fine-tuning: AGP recomputes masks at the
//! cubic schedule's sparsity every few steps; RigL drops the smallest active weights and regrows
//! the inactive ones with the largest gradient, at constant sparsity. Weights and gradients are
//! read from the trainer as host vectors and masks are handed back; the pruning crate only sees
//! data.

use secateur_graph::{Graph, Mask, MaskPattern};
use secateur_prune::weights::{
    Agp, CriterionData, WeightPruneConfig, compute_masks, rigl_fraction, rigl_update,
};
use secateur_train::params::{ParamStore, to_host};
use secateur_train::{StepInfo, TrainError, TrainHook};

fn prune_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("pruning during training failed: {e}"))
}

/// Copies weights and masks of the store into a graph snapshot.
fn snapshot(template: &Graph, store: &ParamStore) -> secateur_train::Result<Graph> {
    let mut g = template.clone();
    store.write_to_graph(&mut g)?;
    for (i, name) in store.names.iter().enumerate() {
        if let Some(keep) = store.mask_host(i) {
            let old = g.masks.get(name).cloned();
            let out_axis = old.as_ref().map_or(0, |m| m.out_axis);
            let pattern = old.map_or(MaskPattern::Unstructured, |m| m.pattern);
            g.masks.insert(
                name.clone(),
                Mask {
                    keep,
                    pattern,
                    out_axis,
                },
            );
        }
    }
    g.apply_masks()?;
    Ok(g)
}

/// Gradual magnitude pruning (AGP) during training.
pub struct AgpHook {
    pub schedule: Agp,
    pub config: WeightPruneConfig,
    pub data: CriterionData,
    pub template: Graph,
    /// Steps at which masks were updated and the sparsity then.
    pub log: Vec<(usize, f64)>,
}

impl TrainHook for AgpHook {
    fn after_backward(
        &mut self,
        info: &StepInfo,
        store: &mut ParamStore,
    ) -> secateur_train::Result<()> {
        if !self.schedule.is_update_step(info.step) {
            return Ok(());
        }
        let s = self.schedule.sparsity_at(info.step);
        if s <= 0.0 {
            return Ok(());
        }
        let g = snapshot(&self.template, store)?;
        let mut cfg = self.config.clone();
        cfg.sparsity = Some(s);
        let masks = compute_masks(&g, &cfg, &self.data).map_err(prune_err)?;
        for (w, m) in masks {
            if let Some(i) = store.index_of(&w) {
                store.set_mask(i, &m.keep);
            }
        }
        self.log.push((info.step, s));
        Ok(())
    }
}

/// RigL dynamic sparse training: constant sparsity, periodic drop-and-grow.
pub struct RiglHook {
    /// Parameters with masks that RigL updates.
    pub params: Vec<usize>,
    pub alpha: f64,
    pub interval: usize,
    pub end_step: usize,
    pub updates: usize,
}

impl TrainHook for RiglHook {
    fn after_backward(
        &mut self,
        info: &StepInfo,
        store: &mut ParamStore,
    ) -> secateur_train::Result<()> {
        if info.step == 0 || !info.step.is_multiple_of(self.interval) || info.step >= self.end_step
        {
            return Ok(());
        }
        let fraction = rigl_fraction(self.alpha, info.step, self.end_step);
        for &i in &self.params {
            let (Some(mut keep), Some(g)) = (store.mask_host(i), info.grads[i].as_ref()) else {
                continue;
            };
            let w = store.host(i);
            let grads = to_host(g);
            rigl_update(&mut keep, &w, &grads, fraction);
            store.set_mask(i, &keep);
        }
        self.updates += 1;
        Ok(())
    }
}
