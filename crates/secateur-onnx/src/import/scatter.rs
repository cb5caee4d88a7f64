//! Import of `ScatterND` on constants. Exporters emit it where a model fills a tensor built
//! from constants (Swin's shifted-window attention mask: zeros with a region number written
//! into each window slice); with data, indices and updates known at import the result is a
//! constant, folded here (float or integer data, every `reduction` of opset 16/18). A scatter
//! into an activation is refused with an error naming the node: the IR has no op for it.

use super::{Importer, SymConst, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::Tensor;

/// How `ScatterND` combines an update with the element it lands on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    Replace,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        Ok(match name {
            "none" => Reduction::Replace,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => {
                return Err(format!(
                    "reduction '{other}' is not one of none, add, mul, max, min"
                ));
            }
        })
    }

    fn apply<T: PartialOrd + Copy + std::ops::Add<Output = T> + std::ops::Mul<Output = T>>(
        self,
        old: T,
        new: T,
    ) -> T {
        match self {
            Reduction::Replace => new,
            Reduction::Add => old + new,
            Reduction::Mul => old * new,
            Reduction::Max if new > old => new,
            Reduction::Min if new < old => new,
            Reduction::Max | Reduction::Min => old,
        }
    }
}

/// Scatters `updates` into `data` (of shape `dims`) at the index tuples of `indices` (shape
/// `index_dims`, last axis the tuple length), as ONNX `ScatterND` does.
fn scatter_nd<T: PartialOrd + Copy + std::ops::Add<Output = T> + std::ops::Mul<Output = T>>(
    dims: &[usize],
    data: &mut [T],
    index_dims: &[usize],
    indices: &[i64],
    updates: &[T],
    reduction: Reduction,
) -> std::result::Result<(), String> {
    let Some((&k, lead)) = index_dims.split_last() else {
        return Err("indices must have rank >= 1".into());
    };
    if k == 0 || k > dims.len() {
        return Err(format!(
            "index tuples of length {k} do not fit data of rank {}",
            dims.len()
        ));
    }
    let slice: usize = dims[k..].iter().product();
    let tuples: usize = lead.iter().product();
    if updates.len() != tuples * slice {
        return Err(format!(
            "updates hold {} values, {tuples} index tuples × slices of {slice} need {}",
            updates.len(),
            tuples * slice
        ));
    }
    for (t, tuple) in indices.chunks(k).enumerate().take(tuples) {
        let mut offset = 0usize;
        for (axis, &i) in tuple.iter().enumerate() {
            let d = dims[axis] as i64;
            let i = if i < 0 { i + d } else { i };
            if !(0..d).contains(&i) {
                return Err(format!("index {tuple:?} is out of range for data {dims:?}"));
            }
            offset = offset * dims[axis] + i as usize;
        }
        let start = offset * slice;
        for (x, &u) in data[start..start + slice]
            .iter_mut()
            .zip(&updates[t * slice..(t + 1) * slice])
        {
            *x = reduction.apply(*x, u);
        }
    }
    Ok(())
}

impl Importer {
    /// Folds a `ScatterND` whose inputs are all constants (see the module paragraph).
    pub(super) fn import_scatter_nd(&mut self, node: &NodeProto, inputs: &[String]) -> Result<()> {
        let reduction = Attrs::new(node)
            .string("reduction", "none")
            .and_then(|r| Reduction::parse(&r))
            .map_err(|m| node_err(node, m))?;
        let [data, indices, updates] = inputs else {
            return Err(node_err(node, "ScatterND takes data, indices and updates"));
        };
        let Some((index_dims, index_values)) = self.int_values(indices) else {
            return Err(node_err(
                node,
                format!("indices '{indices}' must be integers known at import"),
            ));
        };
        let out = node
            .output
            .first()
            .cloned()
            .ok_or_else(|| node_err(node, "ScatterND has no output"))?;
        if let (Some(d), Some(u)) = (self.float_consts.get(data), self.float_consts.get(updates)) {
            let dims = d.shape().to_vec();
            let mut values = d.data().to_vec();
            scatter_nd(
                &dims,
                &mut values,
                &index_dims,
                &index_values,
                u.data(),
                reduction,
            )
            .map_err(|m| node_err(node, m))?;
            let t = Tensor::new(dims, values).map_err(|e| node_err(node, e.to_string()))?;
            self.add_folded_const(&out, t, &[data.clone(), updates.clone()]);
            return Ok(());
        }
        if let (Some((dims, mut values)), Some((_, u))) =
            (self.int_values(data), self.int_values(updates))
        {
            scatter_nd(
                &dims,
                &mut values,
                &index_dims,
                &index_values,
                &u,
                reduction,
            )
            .map_err(|m| node_err(node, m))?;
            self.int_consts.insert(out, SymConst::known(dims, &values));
            return Ok(());
        }
        Err(node_err(
            node,
            format!(
                "ScatterND into '{data}' is supported on constants only (data and updates known at import)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_writes_slices_and_reduces_like_onnx() {
        // whole rows replaced: row 0 and, by a negative index, the last
        let dims = [4, 2];
        let mut data: Vec<f32> = (0..8).map(|v| v as f32).collect();
        scatter_nd(
            &dims,
            &mut data,
            &[2, 1],
            &[0, -1],
            &[10., 11., 12., 13.],
            Reduction::Replace,
        )
        .unwrap();
        assert_eq!(data, [10., 11., 2., 3., 4., 5., 12., 13.]);
        let mut data = vec![1i64; 6];
        scatter_nd(
            &[2, 3],
            &mut data,
            &[2, 2],
            &[0, 1, 0, 1],
            &[5, 7],
            Reduction::Add,
        )
        .unwrap();
        assert_eq!(data, [1, 13, 1, 1, 1, 1]);
        let mut data = vec![4.0f32; 3];
        scatter_nd(&[3], &mut data, &[2, 1], &[0, 2], &[9., 1.], Reduction::Max).unwrap();
        assert_eq!(data, [9., 4., 4.]);
    }

    #[test]
    fn bad_scatters_name_the_problem() {
        let mut data = vec![0.0f32; 4];
        let err = scatter_nd(&[4], &mut data, &[1, 1], &[4], &[1.], Reduction::Replace);
        assert!(err.unwrap_err().contains("out of range"));
        let err = scatter_nd(
            &[4],
            &mut data,
            &[1, 1],
            &[0],
            &[1., 2.],
            Reduction::Replace,
        );
        assert!(err.unwrap_err().contains("updates hold 2 values"));
        let err = scatter_nd(&[4], &mut data, &[1, 2], &[0, 0], &[1.], Reduction::Replace);
        assert!(err.unwrap_err().contains("do not fit"));
        assert!(Reduction::parse("sum").is_err());
    }
}
