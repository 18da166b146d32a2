//! Batches the writer refuses, each with a message that says what is wrong.
use circuitry_core::HookPoint;
use circuitry_store::{Dtype, Error, RowBatch, StoreWriter};
use ndarray::{s, Array2};

use crate::common::*;

fn batch<'a>(d: &'a Data, n: usize, paired: bool) -> RowBatch<'a> {
    RowBatch {
        seq: &d.seq[..n],
        pos: &d.pos[..n],
        token_id: &d.token_id[..n],
        example: paired.then(|| &d.example[..n]),
        side: paired.then(|| &d.side[..n]),
        acts: vec![(A, d.a.slice(s![..n, ..])), (B, d.b.slice(s![..n, ..]))],
    }
}

fn refused(w: &mut StoreWriter, b: RowBatch<'_>, want: &str) -> Error {
    let before = w.rows_written();
    let err = w.write(b).unwrap_err();
    assert!(err.to_string().contains(want), "{want:?} not in {err}");
    assert_eq!(w.rows_written(), before, "a refused batch buffers nothing");
    err
}

#[test]
fn nan_and_inf_are_refused_naming_hook_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), spec(Dtype::F32, false, 100)).unwrap();
    let mut d = data(10, 8);
    w.write(batch(&d, 10, false)).unwrap();
    d.b[[3, 2]] = f32::NAN;
    let err = refused(&mut w, batch(&d, 10, false), "blocks.1.hook_mlp_out");
    match err {
        Error::NonFinite {
            hook,
            row,
            global_row,
            col,
            ..
        } => {
            assert_eq!((hook, row, global_row, col), (B, 3, 13, 2));
        }
        other => panic!("{other}"),
    }
    d.b[[3, 2]] = 0.0;
    d.a[[7, 0]] = f32::NEG_INFINITY;
    refused(
        &mut w,
        batch(&d, 10, false),
        "row 7 of the batch (row 17 of the store)",
    );
    d.a[[7, 0]] = 1.0;
    w.write(batch(&d, 10, false)).unwrap();
    assert_eq!(w.finish().unwrap().n_rows, 20);
}

#[test]
fn malformed_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), spec(Dtype::F32, false, 100)).unwrap();
    let d = data(10, 9);

    let mut b = batch(&d, 10, false);
    b.pos = &d.pos[..9];
    refused(&mut w, b, "pos has 9 rows but seq has 10");

    let wide = Array2::<f32>::zeros((10, WIDTH_A + 1));
    let mut b = batch(&d, 10, false);
    b.acts[0] = (A, wide.view());
    refused(
        &mut w,
        b,
        "activations of blocks.0.hook_resid_pre have shape (10, 9), expected (10, 8)",
    );

    let mut b = batch(&d, 10, false);
    b.acts.pop();
    refused(
        &mut w,
        b,
        "1 activation arrays given, the store has 2 hooks",
    );

    let mut b = batch(&d, 10, false);
    b.acts[1].0 = HookPoint::AttnOut { layer: 1 };
    refused(&mut w, b, "no activations for hook blocks.1.hook_mlp_out");

    let mut b = batch(&d, 10, false);
    b.acts[1].0 = A;
    refused(&mut w, b, "no activations for hook blocks.1.hook_mlp_out");

    let far = vec![CONTEXT as u32; 10];
    let mut b = batch(&d, 10, false);
    b.pos = &far;
    refused(&mut w, b, "pos[0] is 16, not below context_size 16");

    refused(&mut w, batch(&d, 10, true), "not paired");
}

#[test]
fn paired_stores_need_valid_example_and_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), spec(Dtype::F32, true, 100)).unwrap();
    let d = data(10, 10);
    refused(
        &mut w,
        batch(&d, 10, false),
        "example and side are required",
    );
    let bad_side = vec![2u8; 10];
    let mut b = batch(&d, 10, true);
    b.side = Some(&bad_side);
    refused(&mut w, b, "side[0] is 2; it must be 0 (clean) or 1 (patch)");
    w.write(batch(&d, 10, true)).unwrap();
}
