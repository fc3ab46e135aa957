//! Reading the CPU backends' tensors on the host for the fused host kernels (attention, RoPE):
//! flex tensors in place, through their strides (a head transpose or a KV-cache slice is never
//! copied), other host tensors through `into_data`.

use burn::tensor::{backend::Backend, Tensor};
use zoo_quant::attention::View4;

/// A tensor's values on the host: borrowed in place (flex) or copied out.
pub(crate) enum Host {
    #[cfg(feature = "flex")]
    Flex(burn_flex::FlexTensor),
    Owned(Vec<f32>, [usize; 4]),
}

impl Host {
    pub(crate) fn new<B: Backend>(x: Tensor<B, 4>) -> Self {
        #[cfg(feature = "flex")]
        {
            use burn::tensor::TensorPrimitive;
            use std::any::Any;
            let dims = x.dims();
            if let TensorPrimitive::Float(p) = x.clone().into_primitive() {
                if let Ok(f) = (Box::new(p) as Box<dyn Any>).downcast::<burn_flex::FlexTensor>() {
                    let ok = f.dtype() == burn::tensor::DType::F32
                        && f.layout().strides().iter().all(|&s| s >= 0)
                        && f.layout().shape().as_slice() == dims.as_slice();
                    if ok {
                        return Host::Flex(*f);
                    }
                }
            }
        }
        let dims = x.dims();
        let data = x
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        Host::Owned(data, dims)
    }

    pub(crate) fn view(&self) -> View4<'_> {
        match self {
            #[cfg(feature = "flex")]
            Host::Flex(f) => {
                let l = f.layout();
                let st = l.strides();
                let sh = l.shape().as_slice();
                View4 {
                    data: f.storage::<f32>(),
                    offset: l.start_offset(),
                    dims: [sh[0], sh[1], sh[2], sh[3]],
                    strides: [
                        st[0] as usize,
                        st[1] as usize,
                        st[2] as usize,
                        st[3] as usize,
                    ],
                }
            }
            Host::Owned(data, dims) => View4 {
                data,
                offset: 0,
                dims: *dims,
                strides: [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1],
            },
        }
    }
}
