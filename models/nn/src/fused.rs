//! SwiGLU's gated product `silu(gate)·up` as one operation.
//!
//! Through Burn's ops it is a sigmoid, two products and, under autodiff, a backward pass that
//! runs the sigmoid again: on flex each is a pass of its own with glibc's scalar `expf`
//! (SiLU's forward and backward took ~9 % of a SmolLM2 LoRA training step). On flex — plain,
//! and as `Autodiff<Flex>`, the training backend — it is one vectorized pass forward
//! ([`zoo_quant::elementwise::silu_mul`]) and one backward
//! ([`zoo_quant::elementwise::swiglu_backward`], registered as the operation's backward step);
//! on every other backend it is Burn's `silu(gate) * up`.
//!
//! Numbers: the vectorized `exp` is within 3e-7 relative of the libm one, so the fused
//! operation equals Burn's ops to f32 rounding (checked in the tests below).

use burn::tensor::{activation::silu, backend::Backend, Tensor};

/// `silu(gate)·up` for tensors of one shape (LLaMA's and GLM's MLP), fused on flex.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (gate, up) = match flex::swiglu(gate, up) {
        Ok(y) => return y,
        Err(pair) => pair,
    };
    silu(gate) * up
}

/// `x` `[a, b, c, d]` with its axes 1 and 2 swapped, `[a, c, b, d]`: attention's head
/// transpose (`[batch, heads, t, d]` → `[batch, t, heads, d]`) before the heads are joined.
///
/// Burn's `swap_dims` is a view, and the `reshape` that joins the heads then copies it on flex
/// through burn-flex's element-by-element strided iterator (~0.75 GB/s), forward and, under
/// autodiff, backward. On flex and `Autodiff<Flex>` this is a copy of the contiguous
/// `d`-float rows instead (its backward step is the same copy), and the result is contiguous;
/// other backends get the view.
pub fn swap_dims_12<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match flex::swap_dims_12(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.swap_dims(1, 2)
}

#[cfg(feature = "flex")]
mod flex {
    use std::any::{Any, TypeId};

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::tensor::backend::{Backend, BackendTypes};
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use zoo_quant::elementwise::{silu_mul, swiglu_backward};

    type AdFlex = Autodiff<Flex>;
    /// `Autodiff<Flex>`'s float tensor: the flex tensor and its graph node.
    type AdTensor = <AdFlex as BackendTypes>::FloatTensorPrimitive;

    /// `t` as `U` when that is its type.
    fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
        if TypeId::of::<T>() != TypeId::of::<U>() {
            return Err(t);
        }
        Ok(*(Box::new(t) as Box<dyn Any>)
            .downcast::<U>()
            .expect("the types were compared"))
    }

    /// A contiguous f32 tensor's values.
    fn values(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("a contiguous f32 tensor")
    }

    /// `t` contiguous, when it holds f32 values.
    fn contiguous(t: FlexTensor) -> Option<FlexTensor> {
        if t.dtype() != DType::F32 {
            return None;
        }
        Some(if t.as_slice::<f32>().is_some() {
            t
        } else {
            t.to_contiguous()
        })
    }

    fn tensor(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
        let shape = like.layout().shape().as_slice().to_vec();
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// The forward values `silu(g)·u`.
    fn forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
        let mut y = values(g).to_vec();
        silu_mul(&mut y, values(u));
        tensor(y, g)
    }

    /// Both inputs, contiguous f32 of one shape; `None` otherwise (the caller falls back).
    fn operands(g: &FlexTensor, u: &FlexTensor) -> Option<(FlexTensor, FlexTensor)> {
        if g.layout().shape() != u.layout().shape() {
            return None;
        }
        Some((contiguous(g.clone())?, contiguous(u.clone())?))
    }

    #[derive(Debug)]
    struct SwiGlu;

    impl Backward<Flex, 2> for SwiGlu {
        /// The gate and up values, contiguous.
        type State = (FlexTensor, FlexTensor);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (g, u) = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let dy = contiguous(dy).expect("an f32 gradient");
            let n = values(&g).len();
            let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
            swiglu_backward(values(&g), values(&u), values(&dy), &mut dg, &mut du);
            let [pg, pu] = ops.parents;
            if let Some(node) = pg {
                grads.register::<Flex>(node.id, tensor(dg, &g));
            }
            if let Some(node) = pu {
                grads.register::<Flex>(node.id, tensor(du, &u));
            }
        }
    }

    /// `t` `[a, b, c, d]` (f32, the last axis of stride 1) as a contiguous `[a, c, b, d]`.
    fn swapped_copy(t: &FlexTensor) -> Option<FlexTensor> {
        let l = t.layout();
        let sh = l.shape().as_slice();
        let st = l.strides();
        if t.dtype() != DType::F32 || sh.len() != 4 || st[3] != 1 || st.iter().any(|&s| s < 0) {
            return None;
        }
        let (a, b, c, d) = (sh[0], sh[1], sh[2], sh[3]);
        let st = [st[0] as usize, st[1] as usize, st[2] as usize];
        let src = t.storage::<f32>();
        let off = l.start_offset();
        let mut out = vec![0f32; a * b * c * d];
        let mut dst = out.chunks_exact_mut(d.max(1));
        for i in 0..a {
            for k in 0..c {
                for j in 0..b {
                    let s = off + i * st[0] + j * st[1] + k * st[2];
                    if let Some(row) = dst.next() {
                        row.copy_from_slice(&src[s..s + d]);
                    }
                }
            }
        }
        Some(FlexTensor::from_data(TensorData::new(out, [a, c, b, d])))
    }

    /// `t` swapped and copied; a contiguous copy first when its last axis is strided.
    fn swapped(t: &FlexTensor) -> Option<FlexTensor> {
        swapped_copy(t).or_else(|| swapped_copy(&contiguous(t.clone())?))
    }

    #[derive(Debug)]
    struct Swap12;

    impl Backward<Flex, 1> for Swap12 {
        type State = ();

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                swapped(&dy).expect("an f32 gradient of four axes")
            });
        }
    }

    /// [`super::swap_dims_12`] when `B` is flex or `Autodiff<Flex>`; `x` back otherwise.
    pub(super) fn swap_dims_12<B: Backend>(x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
        let is_flex = TypeId::of::<B>() == TypeId::of::<Flex>();
        let is_ad = TypeId::of::<B>() == TypeId::of::<AdFlex>();
        if !is_flex && !is_ad {
            return Err(x);
        }
        // Already laid out as `[a, c, b, d]` (the host attention writes its output so): the
        // view is free, and so is the reshape after it.
        let free = |t: &FlexTensor| {
            t.layout().shape().as_slice().len() == 4 && t.transpose(1, 2).is_contiguous()
        };
        let p = primitive(x.clone());
        let out: B::FloatTensorPrimitive = if is_flex {
            let t: FlexTensor = cast(p).expect("B is Flex");
            if free(&t) {
                return Err(x);
            }
            let Some(y) = swapped(&t) else {
                return Err(x);
            };
            cast(y).expect("B is Flex")
        } else {
            let t: AdTensor = cast(p).expect("B is Autodiff<Flex>");
            if free(&t.primitive) {
                return Err(x);
            }
            let Some(y) = swapped(&t.primitive) else {
                return Err(x);
            };
            let out = match Swap12
                .prepare::<NoCheckpointing>([t.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            cast(out).expect("B is Autodiff<Flex>")
        };
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
        match t.into_primitive() {
            TensorPrimitive::Float(p) => p,
            TensorPrimitive::QFloat(_) => unreachable!("SwiGLU's inputs are not quantized"),
        }
    }

    /// The fused operation when `B` is flex or `Autodiff<Flex>`; the inputs back otherwise.
    #[allow(clippy::type_complexity)]
    pub(super) fn swiglu<B: Backend, const D: usize>(
        gate: Tensor<B, D>,
        up: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
        let is_flex = TypeId::of::<B>() == TypeId::of::<Flex>();
        let is_ad = TypeId::of::<B>() == TypeId::of::<AdFlex>();
        if !is_flex && !is_ad {
            return Err((gate, up));
        }
        let (pg, pu) = (primitive(gate.clone()), primitive(up.clone()));
        let out: B::FloatTensorPrimitive = if is_flex {
            let (g, u): (FlexTensor, FlexTensor) =
                (cast(pg).expect("B is Flex"), cast(pu).expect("B is Flex"));
            let Some((g, u)) = operands(&g, &u) else {
                return Err((gate, up));
            };
            cast(forward(&g, &u)).expect("B is Flex")
        } else {
            let (g, u): (AdTensor, AdTensor) = (
                cast(pg).expect("B is Autodiff<Flex>"),
                cast(pu).expect("B is Autodiff<Flex>"),
            );
            let Some((gv, uv)) = operands(&g.primitive, &u.primitive) else {
                return Err((gate, up));
            };
            let y = forward(&gv, &uv);
            let out = match SwiGlu
                .prepare::<NoCheckpointing>([g.node.clone(), u.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((gv, uv), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            cast(out).expect("B is Autodiff<Flex>")
        };
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().expect("f32")
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// On flex: the fused forward equals Burn's ops, also on a transposed (strided) input.
    #[test]
    fn the_fused_forward_equals_burns_ops() {
        let device = Default::default();
        let g = Tensor::<Flex, 3>::random([2, 5, 7], Distribution::Normal(0.0, 3.0), &device);
        let u = Tensor::<Flex, 3>::random([2, 7, 5], Distribution::Normal(0.0, 1.0), &device)
            .swap_dims(1, 2);
        let want = values(silu(g.clone()) * u.clone());
        assert!(
            flex::swiglu(g.clone(), u.clone()).is_ok(),
            "the fused path serves flex"
        );
        close(&values(swiglu(g, u)), &want, 1e-6);
    }

    /// The head transpose equals Burn's `swap_dims` on flex (a contiguous input, a strided
    /// one, one whose last axis is strided) and, under `Autodiff<Flex>`, so does the gradient
    /// through it.
    #[test]
    fn the_head_transpose_equals_swap_dims() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 3, 5, 4], Distribution::Default, &device);
        let inputs = [
            x.clone(),
            x.clone().swap_dims(0, 2).swap_dims(0, 2) * 1.0,
            Tensor::<Flex, 4>::random([3, 2, 5, 4], Distribution::Default, &device).swap_dims(0, 1),
            Tensor::<Flex, 4>::random([2, 3, 4, 5], Distribution::Default, &device).swap_dims(2, 3),
        ];
        let laid_out =
            Tensor::<Flex, 4>::random([2, 5, 3, 4], Distribution::Default, &device).swap_dims(1, 2);
        assert!(
            flex::swap_dims_12(laid_out.clone()).is_err(),
            "the view is free"
        );
        assert_eq!(
            values(swap_dims_12(laid_out.clone())),
            values(laid_out.swap_dims(1, 2))
        );
        for x in inputs {
            assert!(
                flex::swap_dims_12(x.clone()).is_ok(),
                "the copy serves flex"
            );
            let got = swap_dims_12(x.clone());
            assert_eq!(got.dims(), [2, 5, 3, 4]);
            assert_eq!(values(got), values(x.swap_dims(1, 2)));
        }
        let w0 = Tensor::<Flex, 4>::random([2, 5, 3, 4], Distribution::Default, &device);
        let run = |fused: bool| {
            let x = Tensor::<Ad, 4>::from_inner(x.clone()).require_grad();
            let y = if fused {
                swap_dims_12(x.clone() * 2.0)
            } else {
                (x.clone() * 2.0).swap_dims(1, 2)
            };
            let w = Tensor::<Ad, 4>::from_inner(w0.clone());
            let loss = (y.reshape([2, 5, 12]) * w.reshape([2, 5, 12])).sum();
            let grads = loss.backward();
            (
                values(loss.inner()),
                values(x.grad(&grads).expect("x's gradient")),
            )
        };
        let (l1, g1) = run(true);
        let (l0, g0) = run(false);
        close(&l1, &l0, 1e-6);
        assert_eq!(g1, g0);
    }

    /// Under `Autodiff<Flex>`: the loss and the gradients to both inputs (and to a product
    /// before them) equal Burn's ops; with one input untracked, its gradient is absent.
    #[test]
    fn the_fused_gradients_equal_burns() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        let (n, d, h) = (9, 6, 11);
        let x0 = Tensor::<Flex, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
        let w0 = Tensor::<Flex, 2>::random([d, h], Distribution::Normal(0.0, 2.0), &device);
        let u0 = Tensor::<Flex, 2>::random([n, h], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool, track_u: bool| {
            let x = Tensor::<Ad, 2>::from_inner(x0.clone()).require_grad();
            let w = Tensor::<Ad, 2>::from_inner(w0.clone());
            let mut u = Tensor::<Ad, 2>::from_inner(u0.clone());
            if track_u {
                u = u.require_grad();
            }
            let g = x.clone().matmul(w);
            let y = if fused {
                assert!(
                    flex::swiglu(g.clone(), u.clone()).is_ok(),
                    "and Autodiff<Flex>"
                );
                swiglu(g, u.clone())
            } else {
                silu(g) * u.clone()
            };
            let loss = (y.clone() * y.clone() + y).sum();
            let grads = loss.backward();
            (
                values(loss.inner()),
                values(x.grad(&grads).expect("x's gradient")),
                u.grad(&grads).map(values),
            )
        };
        for track_u in [true, false] {
            let (l1, gx1, gu1) = run(true, track_u);
            let (l0, gx0, gu0) = run(false, track_u);
            close(&l1, &l0, 1e-5);
            close(&gx1, &gx0, 1e-5);
            assert_eq!(gu1.is_some(), track_u);
            if let (Some(a), Some(b)) = (gu1, gu0) {
                close(&a, &b, 1e-5);
            }
        }
    }
}
