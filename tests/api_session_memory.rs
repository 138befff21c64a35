//! The session hooks a server uses to keep many sessions within a memory
//! budget: `set_prompts` (the whole prompt set at once), `embedding_bytes`
//! and `drop_embeddings`. Dropping embeddings must not change any mask.

use std::sync::Arc;

use segvol::api::{Engine, Session};
use segvol::io::{affine, nifti::CtVolume};

fn ct() -> CtVolume {
    let dims = [40, 32, 20];
    let data: Vec<f32> = (0..40 * 32 * 20)
        .map(|n: usize| {
            let (i, j, k) = (n % 40, n / 40 % 32, n / 1280);
            let r = ((i as f32 - 20.0) / 14.0).powi(2)
                + ((j as f32 - 16.0) / 11.0).powi(2)
                + ((k as f32 - 10.0) / 7.0).powi(2);
            if r < 1.0 {
                (40 + (i * 7 + j * 3 + k) % 50) as f32
            } else {
                -1000.0
            }
        })
        .collect();
    CtVolume::from_array("ct", dims, data, affine::from_spacing([1.0, 1.0, 2.5])).unwrap()
}

#[test]
fn set_prompts_equals_prompts_added_one_by_one() {
    let engine = Arc::new(Engine::synthetic_tiny().unwrap());
    let mut one_by_one = Session::new(engine.clone());
    one_by_one.set_image(ct()).unwrap();
    one_by_one.add_text("liver").unwrap();
    one_by_one
        .add_box([8.0, 6.0, 3.0, 30.0, 26.0, 16.0])
        .unwrap();
    one_by_one.add_point([20.0, 16.0, 10.0], true).unwrap();
    let want = one_by_one
        .add_point([12.0, 10.0, 10.0], false)
        .unwrap()
        .labels
        .clone();

    let mut at_once = Session::new(engine);
    at_once.set_image(ct()).unwrap();
    let got = at_once
        .set_prompts(
            Some("liver"),
            Some([30.0, 26.0, 16.0, 8.0, 6.0, 3.0]),
            &[([20.0, 16.0, 10.0], true), ([12.0, 10.0, 10.0], false)],
        )
        .unwrap();
    assert_eq!(got.labels, want);
    // A failing prompt set keeps the previous prompts and mask.
    assert!(at_once
        .set_prompts(None, None, &[([999.0, 0.0, 0.0], true)])
        .is_err());
    assert_eq!(at_once.mask().unwrap().labels, want);
}

#[test]
fn dropped_embeddings_are_recomputed_with_the_same_mask() {
    let engine = Arc::new(Engine::synthetic_tiny().unwrap());
    let mut s = Session::new(engine);
    s.set_image(ct()).unwrap();
    assert_eq!(s.embedding_bytes(), 0);
    let first = s.add_text("liver").unwrap().labels.clone();
    let held = s.embedding_bytes();
    assert!(held > 0);
    assert!(s.image_bytes() > 0);

    s.drop_embeddings();
    assert_eq!(s.embedding_bytes(), 0);
    // The prompts survive: the next click re-encodes and gives what it
    // would have given with the embeddings kept.
    let after_drop = s
        .add_point([20.0, 16.0, 10.0], true)
        .unwrap()
        .labels
        .clone();
    assert!(s.embedding_bytes() > 0);

    let engine = Arc::new(Engine::synthetic_tiny().unwrap());
    let mut kept = Session::new(engine);
    kept.set_image(ct()).unwrap();
    assert_eq!(kept.add_text("liver").unwrap().labels, first);
    assert_eq!(
        kept.add_point([20.0, 16.0, 10.0], true).unwrap().labels,
        after_drop
    );
}
