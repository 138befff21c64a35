//! Bad shapes get the same error text from every backend: one set of
//! checks, `backend::shapes`, called by both `Backend` implementations.

use segvol::backend::{Activation, Backend};

/// Bad shapes get the same error text from both backends (one set of
/// checks, `backend::shapes`).
#[test]
fn shape_errors_match_cpu() {
    let Some(bes) = crate::cuda::backends("shape_errors_match_cpu", false) else {
        return;
    };
    let c = crate::harness::cpu();
    for (be, label) in bes {
        let g = |s: &[usize]| be.upload(&vec![0.5; s.iter().product()], s).unwrap();
        let h = |s: &[usize]| c.upload(&vec![0.5; s.iter().product()], s).unwrap();
        let same = |what: &str, ge: segvol::Error, ce: segvol::Error| {
            assert_eq!(ge.to_string(), ce.to_string(), "[{label}] {what}");
        };
        same(
            "upload",
            be.upload(&[1.0; 5], &[2, 3]).unwrap_err(),
            c.upload(&[1.0; 5], &[2, 3]).unwrap_err(),
        );
        same(
            "reshape",
            be.reshape(g(&[2, 3]), &[5]).unwrap_err(),
            c.reshape(h(&[2, 3]), &[5]).unwrap_err(),
        );
        same(
            "slice_batch",
            be.slice_batch(&g(&[4, 2]), 3, 2).unwrap_err(),
            c.slice_batch(&h(&[4, 2]), 3, 2).unwrap_err(),
        );
        same(
            "concat_batch",
            be.concat_batch(&[&g(&[1, 2]), &g(&[1, 3])]).unwrap_err(),
            c.concat_batch(&[&h(&[1, 2]), &h(&[1, 3])]).unwrap_err(),
        );
        same(
            "narrow_rows",
            be.narrow_rows(&g(&[1, 4, 2]), 3, 2).unwrap_err(),
            c.narrow_rows(&h(&[1, 4, 2]), 3, 2).unwrap_err(),
        );
        same(
            "add",
            be.add(&g(&[2, 3]), &g(&[3, 2])).unwrap_err(),
            c.add(&h(&[2, 3]), &h(&[3, 2])).unwrap_err(),
        );
        same(
            "add_broadcast",
            be.add_broadcast(&g(&[2, 5, 3]), &g(&[5])).unwrap_err(),
            c.add_broadcast(&h(&[2, 5, 3]), &h(&[5])).unwrap_err(),
        );
        same(
            "layer_norm",
            be.layer_norm(&g(&[4, 7]), &g(&[6]), &g(&[7]), 1e-5)
                .unwrap_err(),
            c.layer_norm(&h(&[4, 7]), &h(&[6]), &h(&[7]), 1e-5)
                .unwrap_err(),
        );
        same(
            "layer_norm_item",
            be.layer_norm_item(&g(&[2, 3, 4]), &g(&[11]), &g(&[12]), 1e-5, Activation::None)
                .unwrap_err(),
            c.layer_norm_item(&h(&[2, 3, 4]), &h(&[11]), &h(&[12]), 1e-5, Activation::None)
                .unwrap_err(),
        );
    }
}
