//! Fetches checkpoint tensors for the model, checking each shape against
//! what the config expects so a mismatch names the tensor.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::weights::Checkpoint;

pub struct Loader<'a, B: Backend> {
    pub backend: &'a B,
    pub ckpt: &'a Checkpoint,
}

impl<'a, B: Backend> Loader<'a, B> {
    pub fn new(backend: &'a B, ckpt: &'a Checkpoint) -> Self {
        Loader { backend, ckpt }
    }

    fn view(&self, name: &str, shape: &[usize]) -> Result<crate::weights::WeightView<'a>> {
        let v = self.ckpt.require(name)?;
        if v.shape != shape {
            return Err(Error::NotSegVol(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                v.shape
            )));
        }
        Ok(v)
    }

    /// The tensor on the backend.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        self.backend.weight(&self.view(name, shape)?)
    }

    /// The tensor on the backend, reshaped (e.g. `[1, C]` embeddings to `[C]`).
    pub fn tensor_as(&self, name: &str, shape: &[usize], as_shape: &[usize]) -> Result<B::Tensor> {
        let t = self.tensor(name, shape)?;
        self.backend.reshape(t, as_shape)
    }

    /// The tensor's values on the host, as f32.
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.view(name, shape)?.to_f32()?.into_owned())
    }

    /// A Linear layer `prefix.weight [out, in]` (+ `prefix.bias [out]`).
    pub fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
        Ok(Linear {
            w: self.tensor(&format!("{prefix}.weight"), &[out, inp])?,
            b: if bias {
                Some(self.tensor(&format!("{prefix}.bias"), &[out])?)
            } else {
                None
            },
        })
    }

    pub fn layer_norm(&self, prefix: &str, width: usize) -> Result<LayerNorm<B>> {
        Ok(LayerNorm {
            w: self.tensor(&format!("{prefix}.weight"), &[width])?,
            b: self.tensor(&format!("{prefix}.bias"), &[width])?,
        })
    }
}

pub struct Linear<B: Backend> {
    pub w: B::Tensor,
    pub b: Option<B::Tensor>,
}

impl<B: Backend> Linear<B> {
    pub fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        act: crate::backend::Activation,
    ) -> Result<B::Tensor> {
        be.linear(x, &self.w, self.b.as_ref(), act, None)
    }
    /// `residual + x·wᵀ + b`.
    pub fn forward_residual(
        &self,
        be: &B,
        x: &B::Tensor,
        residual: &B::Tensor,
    ) -> Result<B::Tensor> {
        be.linear(
            x,
            &self.w,
            self.b.as_ref(),
            crate::backend::Activation::None,
            Some(residual),
        )
    }
}

pub struct LayerNorm<B: Backend> {
    pub w: B::Tensor,
    pub b: B::Tensor,
}

impl<B: Backend> LayerNorm<B> {
    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        be.layer_norm(x, &self.w, &self.b, 1e-5)
    }
}
