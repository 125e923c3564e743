//! Every config key that an error message names exists in the `RunConfig` schema:
//! the keys written in the library sources' strings, and those in the messages of
//! configs full of bad values. The schema is every dotted path of configs that
//! parse (each variant of each tagged choice, every optional field set).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clip_train::RunConfig;
use serde_json::Value;

const SECTIONS: [&str; 6] = ["run", "model", "data", "optim", "train", "compare"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const BASE: &str = r#"
[model.architecture]
preset = "tiny"
[data]
train = { kind = "image_folder", path = "a" }
"#;

/// Overrides that, applied to `BASE` one list at a time, set every optional field
/// and every variant of the tagged choices.
fn samples() -> Vec<Vec<&'static str>> {
    vec![
        vec![
            "model.architecture={preset=\"tiny\", vision={}, text={}, projection_dim=16}",
            "model.tokenizer=\"t.json\"",
            "model.lora={r=4}",
            "model.head={scale=2.0}",
            "data.val={kind=\"idx\", images=\"i\", labels=\"l\", class_names=[\"a\"]}",
            "data.train_limit=1",
            "data.val_limit=1",
            "data.eval_batch_size=2",
            "data.train_transforms=[{op=\"resize\", size=8}, {op=\"center_crop\", size=8}, \
             {op=\"random_resized_crop\", size=8}, {op=\"random_horizontal_flip\"}, \
             {op=\"color_jitter\"}, {op=\"random_rotation\", degrees=1}, \
             {op=\"trivial_augment_wide\"}, {op=\"rand_augment\"}, {op=\"to_tensor\"}, \
             {op=\"normalize\"}, {op=\"random_erasing\"}]",
            "data.eval_transforms=[{op=\"center_crop\", size=8}]",
            "data.loader.mix={mixup_alpha=0.8}",
            "optim.lr_policy={kind=\"uniform\", head_lr=1e-4}",
            "optim.schedule={kind=\"cosine\", warmup={fraction=0.1, round=\"down\"}}",
            "train.max_steps=1",
            "train.ema={}",
            "train.eval_every_steps=1",
            "train.early_stopping={}",
            "train.precision_on_cpu=\"fp32\"",
            "train.checkpoints={every_steps=1}",
            "compare.lora_lr=1e-4",
            "compare.probe_lr=1e-3",
        ],
        vec![
            "optim.lr_policy={kind=\"llrd\", decay=0.9, head_lr=1e-4}",
            "optim.schedule={kind=\"linear\"}",
            "train.unfreeze={kind=\"progressive\"}",
            "data.val={kind=\"csv\", path=\"v.csv\"}",
            "data.test={kind=\"csv\", path=\"t.csv\"}",
            "data.retrieval={kind=\"csv\", path=\"r.csv\", caption_column=\"caption\"}",
            "data.eval_sets={shift={kind=\"csv\", path=\"s.csv\"}}",
            "model.head={kind=\"hf\"}",
        ],
        vec![
            "optim.lr_policy={kind=\"tutorial_llrd\", decay=0.9}",
            "optim.schedule={kind=\"constant\"}",
            "train.unfreeze={kind=\"head_only\"}",
        ],
        vec![
            "optim.lr_policy={kind=\"discriminative\"}",
            "train.unfreeze={kind=\"lp_ft\"}",
        ],
    ]
}

fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(x, &p, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| paths(x, prefix, out)),
        _ => {}
    }
}

fn schema() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |cfg: RunConfig| paths(&serde_json::to_value(&cfg).unwrap(), "", &mut keys);
    add(RunConfig::default());
    for o in samples() {
        let o: Vec<String> = o.into_iter().map(String::from).collect();
        add(RunConfig::from_toml(BASE, "sample.toml", &o).unwrap());
    }
    for name in [
        "full.toml",
        "demo.toml",
        "smoke.toml",
        "tutorial.toml",
        "captions.toml",
        "robustness.toml",
    ] {
        add(RunConfig::load(&root().join("configs").join(name), &[]).unwrap());
    }
    keys
}

/// The dotted config keys in `text` (`data.train_transforms[2].scale` is
/// `data.train_transforms.scale`), without file names such as `model.safetensors`
/// and method calls such as `model.save_pretrained(...)`.
fn keys_in(text: &str) -> Vec<String> {
    let is_key_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c);
    let chars: Vec<char> = text.chars().collect();
    let mut keys = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_key_char(chars[i]) || (i > 0 && is_key_char(chars[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_key_char(chars[i]) {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        if !SECTIONS.iter().any(|s| token.starts_with(&format!("{s}.")))
            || chars.get(i) == Some(&'(')
        {
            continue;
        }
        let mut key = String::new();
        let mut in_index = false;
        for c in token.chars() {
            match c {
                '[' => in_index = true,
                ']' => in_index = false,
                c if !in_index => key.push(c),
                _ => {}
            }
        }
        let key = key.trim_end_matches('.').to_string();
        let last = key.rsplit('.').next().unwrap_or("");
        if ![
            "safetensors",
            "json",
            "jsonl",
            "toml",
            "csv",
            "png",
            "txt",
            "pkl",
            "bin",
        ]
        .contains(&last)
        {
            keys.push(key);
        }
    }
    keys
}

/// The string literals of Rust source `code` (plain and raw; comments, char
/// literals and lifetimes skipped).
fn string_literals(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            '\'' => {
                // A char literal ('x', '\n', '"') or a lifetime ('a).
                if c.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            'r' if (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
                && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_')) =>
            {
                let mut j = i + 1;
                while c.get(j) == Some(&'#') {
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                let hashes = j - i - 1;
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = c[j + 1..].iter().collect();
                let end = rest.find(&close).unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                i = j + 1 + rest[..end].chars().count() + close.chars().count();
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&ch) = c.get(i) {
                        s.push(ch);
                    }
                    i += 1;
                }
                out.push(s);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// The string literals of the library code (test modules left out).
fn source_strings(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            source_strings(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for s in string_literals(code) {
                out.push((path.clone(), s));
            }
        }
    }
}

#[test]
fn every_key_named_in_the_library_sources_exists() {
    let schema = schema();
    let mut strings = Vec::new();
    for c in ["model", "data", "optim", "train", "train-cli"] {
        source_strings(&root().join("crates").join(c).join("src"), &mut strings);
    }
    let mut checked = 0;
    let mut missing = Vec::new();
    for (file, s) in &strings {
        for k in keys_in(s) {
            checked += 1;
            if !schema.contains(&k) {
                missing.push(format!("{}: `{k}` in {s:?}", file.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} keys found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "keys that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_key_in_the_messages_of_bad_configs_exists() {
    let schema = schema();
    let bad: Vec<Vec<&str>> = vec![
        vec![
            "optim.lr=-1",
            "optim.weight_decay=-1",
            "optim.lr_policy={kind=\"llrd\", decay=2.0, head_lr=-1}",
            "optim.schedule={kind=\"cosine\", warmup=1.5, min_lr_ratio=2}",
            "optim.scaler={init_scale=-1, growth_factor=0.5, backoff_factor=2, growth_interval=0}",
            "optim.betas=[1.5, 2.0]",
            "optim.eps=-1",
            "optim.max_grad_norm=-1",
            "model.head={dropout=2.0, scale=-1}",
            "model.regularization={residual_dropout=2.0}",
            "data.val_fraction=2.0",
            "data.loader.batch_size=0",
            "data.eval_batch_size=0",
            "data.loader.mix={mixup_alpha=-1, prob=2}",
            "data.train_transforms=[{op=\"random_horizontal_flip\", p=2}, {op=\"normalize\"}, {op=\"center_crop\", size=0}]",
            "train.epochs=0",
            "train.grad_accum=0",
            "train.label_smoothing=2.0",
            "train.ema={decay=2.0}",
            "train.early_stopping={patience=0}",
            "train.checkpoints={keep_last=0}",
            "train.log_every_steps=0",
        ],
        vec!["optim.lr_policy={kind=\"discriminative\", bottom=-1, head=0}"],
        vec!["model.lora={r=0, alpha=-1}"],
        vec!["data.train_transforms=[{op=\"rand_augment\", magnitude=40, num_ops=0}]"],
    ];
    let mut checked = 0;
    for overrides in bad {
        let o: Vec<String> = overrides.into_iter().map(String::from).collect();
        let err = RunConfig::from_toml(BASE, "bad.toml", &o)
            .unwrap_err()
            .to_string();
        for k in keys_in(&err) {
            checked += 1;
            assert!(schema.contains(&k), "`{k}` does not exist; message:\n{err}");
        }
    }
    assert!(checked > 20, "only {checked} keys in the messages");
}
/// Every key of the schema is documented in `config_keys::KEYS` (the source of
/// `train-cli config` and the README's table), and nothing else is: tables
/// whose keys are listed stand for themselves, and the fields inside a choice
/// (a source, a transform, a tagged policy, a tower's architecture) are
/// documented with the choice.
#[test]
fn every_schema_key_is_documented_and_the_readme_table_is_generated() {
    let choices = [
        "data.train.",
        "data.val.",
        "data.test.",
        "data.retrieval.",
        // The names of the evaluation sets are the user's; each holds a source.
        "data.eval_sets.",
        "data.train_transforms.",
        "data.eval_transforms.",
        "model.architecture.vision.",
        "model.architecture.text.",
        "optim.lr_policy.",
        "optim.schedule.warmup.",
        "train.unfreeze.",
    ];
    let tables = [
        "run",
        "model",
        "data",
        "optim",
        "train",
        "compare",
        "data.loader",
        "data.loader.mix",
        "model.head",
        "model.regularization",
        "optim.scaler",
        "optim.schedule",
        "train.checkpoints",
    ];
    let want: BTreeSet<String> = schema()
        .into_iter()
        .filter(|k| !choices.iter().any(|c| k.starts_with(c)) && !tables.contains(&k.as_str()))
        .collect();
    let documented: BTreeSet<String> = clip_train::config_keys::KEYS
        .iter()
        .map(|d| d.key.to_string())
        .collect();
    assert_eq!(
        documented.len(),
        clip_train::config_keys::KEYS.len(),
        "a key documented twice"
    );
    let missing: Vec<&String> = want.difference(&documented).collect();
    let extra: Vec<&String> = documented.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "undocumented keys: {missing:?}; documented keys that do not exist: {extra:?}"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- config-keys:start -->\n")
        .nth(1)
        .and_then(|r| r.split("<!-- config-keys:end -->").next())
        .unwrap();
    assert_eq!(
        block,
        clip_train::config_keys::markdown_table(),
        "README's key table is stale: regenerate it with `train-cli config --markdown`"
    );
}
