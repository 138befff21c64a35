//! CLIP tokenizer ids against the reference (`AutoTokenizer` on SegVol's
//! `config/clip`), through both the fixture's `tokenizer.json` and the builtin
//! merge list.

mod common;

use segvol::model::tokenizer::{ClipTokenizer, BOS_ID, EOS_ID, PAD_ID};
use serde_json::Value;

const PREFIX: [u32; 9] = [49406, 320, 11639, 704, 7690, 999, 22399, 539, 320];

fn fixture_json() -> Option<Value> {
    let path = common::fixture("tokenizer/token_ids.json")?;
    Some(serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_pairs(tok: &ClipTokenizer, fx: &Value) {
    let template = fx["template"].as_str().unwrap();
    let pairs = fx["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 39, "fixture has {} pairs", pairs.len());
    for p in pairs {
        let name = p["name"].as_str().unwrap();
        let text = p["text"].as_str().unwrap();
        let want = ids(&p["ids"]);
        assert_eq!(text, template.replace("{}", name));
        assert_eq!(
            tok.encode_prompt(name).unwrap(),
            want,
            "{} prompt {name:?}",
            tok.source()
        );
        assert_eq!(
            tok.encode_raw(text).unwrap(),
            want,
            "{} raw {text:?}",
            tok.source()
        );
    }
}

fn check_batch(tok: &ClipTokenizer, fx: &Value) {
    let b = &fx["batch_example"];
    let names: Vec<&str> = b["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let want_ids: Vec<Vec<u32>> = b["input_ids"].as_array().unwrap().iter().map(ids).collect();
    let want_mask: Vec<Vec<u32>> = b["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let got = tok.encode_batch(&names).unwrap();
    assert_eq!(got.input_ids, want_ids);
    assert_eq!(got.attention_mask, want_mask);
    assert_eq!(fx["pad"].as_u64().unwrap() as u32, PAD_ID);
    assert_eq!(fx["bos"].as_u64().unwrap() as u32, BOS_ID);
    assert_eq!(fx["eos"].as_u64().unwrap() as u32, EOS_ID);
}

#[test]
fn fixture_pairs_through_tokenizer_json() {
    let (Some(fx), Some(path)) = (fixture_json(), common::fixture("tokenizer/tokenizer.json"))
    else {
        return;
    };
    let tok = ClipTokenizer::from_file(&path).unwrap();
    check_pairs(&tok, &fx);
    check_batch(&tok, &fx);
}

#[test]
fn fixture_pairs_through_builtin() {
    let Some(fx) = fixture_json() else { return };
    let tok = ClipTokenizer::builtin().unwrap();
    check_pairs(&tok, &fx);
    check_batch(&tok, &fx);
}

/// The reference ids of docs/REFERENCE.md §6; needs no fixture.
#[test]
fn spec_examples_builtin() {
    let tok = ClipTokenizer::builtin().unwrap();
    let with_prefix = |tail: &[u32]| PREFIX.iter().chain(tail).copied().collect::<Vec<u32>>();
    assert_eq!(
        tok.encode_prompt("liver").unwrap(),
        with_prefix(&[12639, 269, 49407])
    );
    assert_eq!(
        tok.encode_prompt("left kidney").unwrap(),
        with_prefix(&[1823, 14610, 269, 49407])
    );
    assert_eq!(
        tok.encode_prompt("inferior vena cava").unwrap(),
        with_prefix(&[16258, 2498, 47442, 48682, 269, 49407])
    );
    assert_eq!(
        tok.encode_prompt("Liver Tumor").unwrap(),
        with_prefix(&[12639, 22616, 269, 49407])
    );
    assert_eq!(
        tok.encode_raw("A computerized tomography of a liver.")
            .unwrap(),
        with_prefix(&[12639, 269, 49407])
    );
    let b = tok.encode_batch(&["liver", "left kidney"]).unwrap();
    assert_eq!(b.seq_len(), 13);
    assert_eq!(b.eos_positions(), vec![11, 12]);
}

#[test]
fn overlong_name_is_an_error_naming_it() {
    let tok = ClipTokenizer::builtin().unwrap();
    // 70 digits are 70 tokens; with the 11-token template that is 81 > 77.
    let name = "1".repeat(70);
    let err = tok.encode_prompt(&name).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
    assert!(err.contains("77"), "{err}");
    // 66 tokens still fit exactly (66 + 11 = 77).
    assert_eq!(tok.encode_prompt(&"1".repeat(66)).unwrap().len(), 77);
    assert!(tok.encode_batch(&["liver", name.as_str()]).is_err());
    assert!(tok.encode_prompt("  ").is_err());
}

#[test]
fn for_checkpoint_prefers_folder_tokenizer_json() {
    let tok = ClipTokenizer::for_checkpoint(None).unwrap();
    assert!(tok.source().contains("builtin"));
    let empty = std::env::temp_dir().join(format!("segvol-tok-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert!(ClipTokenizer::for_checkpoint(Some(&empty))
        .unwrap()
        .source()
        .contains("builtin"));
    std::fs::remove_dir_all(&empty).unwrap();

    let Some(path) = common::fixture("tokenizer/tokenizer.json") else {
        return;
    };
    let dir = path.parent().unwrap();
    let tok = ClipTokenizer::for_checkpoint(Some(dir)).unwrap();
    assert!(tok.source().ends_with("tokenizer.json"), "{}", tok.source());
}

#[test]
fn broken_tokenizer_json_is_an_error() {
    let dir = std::env::temp_dir().join(format!("segvol-tokbad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, b"{\"model\": 3").unwrap();
    let err = ClipTokenizer::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(ClipTokenizer::from_file(&dir.join("missing.json")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
