//! End-to-end tests of the `train-cli` binary on configs/smoke.toml and a
//! generated image folder.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train-cli"));
    c.env("RUST_LOG", "warn");
    c
}

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.toml")
}

#[path = "../../../tests/support/image_folder.rs"]
mod image_folder;

fn make_folder(root: &Path, per_class: usize) {
    image_folder::make_folder(root, &["cat", "dog", "fox"], per_class);
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `--set` value pointing `data.train` at an image folder.
fn train_source(data: &Path) -> String {
    format!(
        "data.train={{kind=\"image_folder\", path={:?}}}",
        data.display().to_string()
    )
}

/// `--set` value making the image folder `path` the evaluation set `name`.
fn eval_set(name: &str, path: &Path) -> String {
    format!(
        "data.eval_sets={{ {name} = {{ kind = \"image_folder\", path = {:?} }} }}",
        path.display().to_string()
    )
}

/// The tiny preset's text tower for the test tokenizer (its vocabulary and
/// end-of-text id).
const TEST_TEXT_TOWER: &str = "model.architecture.text={hidden_size=32, intermediate_size=64, \
     num_hidden_layers=2, num_attention_heads=4, vocab_size=1514, eos_token_id=1513}";

/// `train-cli export --checkpoint <run_dir> --output <out>`, which must succeed.
fn export_run(run_dir: &Path, out: &Path) {
    let o = run(bin()
        .args(["export", "--checkpoint"])
        .arg(run_dir)
        .arg("--output")
        .arg(out));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The evaluation records of a run's metrics.jsonl.
fn eval_records(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["kind"] == "eval")
        .collect()
}

fn train_args(tmp: &Path, data: &Path) -> Vec<String> {
    vec![
        "--config".into(),
        smoke().display().to_string(),
        "--output-dir".into(),
        tmp.display().to_string(),
        "--set".into(),
        train_source(data),
        "--quiet".into(),
    ]
}

#[test]
fn train_export_eval_predict_inspect_preview_bench() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    std::fs::write(data.join("cat/notes.txt"), "not an image").unwrap();
    // Not quiet: the summary lines are checked.
    let mut args = train_args(tmp.path(), &data);
    args.retain(|a| a != "--quiet");
    let o = run(bin().args(&args));
    assert!(o.status.success());
    // Files left out of the data are named with the reason.
    assert!(
        stderr(&o).contains("data.train: 1 file(s) left out")
            && stderr(&o).contains("notes.txt: not an image extension"),
        "{}",
        stderr(&o)
    );
    let run_dir = tmp.path().join("smoke");
    for f in [
        "config.resolved.toml",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "loss.png",
        "accuracy.png",
        "lr.png",
        "confusion.png",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["global_step"], 9);
    assert_eq!(summary["memory_kind"], "host_rss");
    assert!(stderr(&o).contains("MiB host RSS over"), "{}", stderr(&o));
    let jsonl = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        jsonl
            .lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .count(),
        9
    );
    assert_eq!(
        jsonl
            .lines()
            .filter(|l| l.contains("\"kind\":\"eval\""))
            .count(),
        3
    );

    let export = tmp.path().join("export");
    export_run(&run_dir, &export);
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        assert!(export.join(f).is_file(), "{f} missing from the export");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["id2label"]["1"], "dog");
    // The figures that stand for the run are the selected checkpoint's, in the
    // summary, on the console and in the export's card (of any checkpoint).
    let val_at = |step: u64, key: &str| {
        eval_records(&run_dir)
            .into_iter()
            .find(|r| r["step"] == step)
            .unwrap()["val"][key]
            .as_f64()
            .unwrap()
    };
    let val_accuracy_at = |step: u64| val_at(step, "accuracy");
    let best_step = summary["best"]["step"].as_u64().unwrap();
    assert_eq!(summary["best_eval"]["step"], best_step);
    assert!(
        stderr(&o).contains(&format!(
            "validation (selected checkpoint, step {best_step}): accuracy"
        )),
        "{}",
        stderr(&o)
    );
    let export6 = tmp.path().join("export-step-6");
    export_run(&run_dir.join("checkpoints/step-00000006"), &export6);
    let card6 = std::fs::read_to_string(export6.join("README.md")).unwrap();
    assert!(
        card6.contains("the checkpoint of step 6") && card6.contains("## Validation (step 6, "),
        "{card6}"
    );
    assert!(
        card6.contains(&format!("      value: {}\n", val_accuracy_at(6)))
            && card6.contains(&format!("% | {:.4} |", val_at(6, "loss"))),
        "{card6}"
    );

    let preds = tmp.path().join("preds.jsonl");
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(&export)
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(&preds));
    assert!(o.status.success());
    let metrics: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(metrics["images"], 24);
    // Progress in a file: a plain line (at the end, for so few batches).
    assert!(
        stderr(&o).contains("evaluating: 24/24 images (100%)"),
        "{}",
        stderr(&o)
    );
    let acc = metrics["accuracy"].as_f64().unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 24);
    let correct = lines.iter().filter(|l| l["label"] == l["pred"]).count();
    assert!((correct as f64 / 24.0 - acc).abs() < 1e-9);
    assert_eq!(lines[0]["logits"].as_array().unwrap().len(), 3);
    model_card_loads_and_its_snippet_gives_our_logits(
        &export,
        &lines[0],
        val_accuracy_at(best_step),
    );
    jpegs_give_transformers_logits(&export, tmp.path());
    // The run folder and the checkpoint give the same metrics as the export.
    let o2 = run(bin()
        .args(["eval", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&data));
    let m2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(m2["accuracy"], metrics["accuracy"]);
    for k in ["macro_precision", "macro_recall", "macro_f1"] {
        let v = m2[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert_eq!(m2["per_class_f1"].as_array().unwrap().len(), 3);
    // The run's device and precision by default (smoke: cpu, fp32); --precision
    // bf16 runs under autocast and stays close; a GPU that is not there is an error.
    assert!(
        stderr(&o2).contains("on cpu, fp32 (--device / --precision change it)"),
        "{}",
        stderr(&o2)
    );
    let o3 = run(bin()
        .args(["eval", "--precision", "bf16", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&data));
    assert!(stderr(&o3).contains("on cpu, bf16"), "{}", stderr(&o3));
    let m3: serde_json::Value = serde_json::from_slice(&o3.stdout).unwrap();
    let (l2, l3) = (m2["loss"].as_f64().unwrap(), m3["loss"].as_f64().unwrap());
    assert!(
        l2 != l3 && (l2 - l3).abs() < 0.05 * l2.abs().max(0.1),
        "{l2} vs {l3}"
    );
    let o4 = run(bin()
        .args(["eval", "--device", "cuda:99", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&data));
    assert!(
        !o4.status.success() && stderr(&o4).contains("`--device`: \"cuda:99\" was asked for"),
        "{}",
        stderr(&o4)
    );

    let img = data.join("dog").join("0.png");
    let o = run(bin()
        .args(["predict", "--json", "--top-k", "2", "--model"])
        .arg(&export)
        .arg(&img));
    assert!(o.status.success());
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["top"].as_array().unwrap().len(), 2);

    let o = run(bin()
        .args(["inspect", "--json", "--config"])
        .arg(smoke())
        .arg("--set")
        .arg(train_source(&data)));
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["groups"]["rows"].as_array().unwrap().len() > 3);
    // A run folder's model shows what the run trained (smoke: the text tower
    // frozen), an export every parameter.
    let trained = summary["trainable_parameters"].as_i64().unwrap();
    let o = run(bin().args(["inspect", "--json", "--model"]).arg(&run_dir));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["trainable"].as_i64(), Some(trained), "{m}");
    assert!(trained < m["total"].as_i64().unwrap() / 2);
    let o = run(bin().args(["inspect", "--json", "--model"]).arg(&export));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["trainable"], m["total"], "{m}");
    // A closed pipe (`inspect --json | head -c 0`) ends the process quietly.
    let mut child = bin()
        .args(["inspect", "--json", "--model"])
        .arg(&run_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_ne!(o.status.code(), Some(101), "{}", stderr(&o));
    // Global flags go before or after the subcommand.
    let o = run(bin()
        .args(["--quiet", "--log-format", "json", "inspect", "--model"])
        .arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(bin()
        .args(["--config"])
        .arg(smoke())
        .args(["inspect", "--model"])
        .arg(&run_dir));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("belong to training"), "{}", stderr(&o));
    // Every tensor by its Hugging Face name, with its group's LR and decay: smoke's
    // llrd (lr 3e-3, decay 0.9, 2 blocks) gives block 1 lr * 0.9^(2 + 1 - 2).
    let tensors = r["tensors"].as_array().unwrap();
    let tensor = |name: &str| tensors.iter().find(|t| t["name"] == name).unwrap();
    let fc1 = tensor("vision_model.encoder.layers.1.mlp.fc1.weight");
    assert!(
        (fc1["lr"].as_f64().unwrap() - 2.7e-3).abs() < 1e-12,
        "{fc1}"
    );
    assert_eq!(fc1["weight_decay"].as_f64(), Some(0.01), "{fc1}");
    assert_eq!(fc1["shape"], serde_json::json!([64, 32]));
    let norm = tensor("vision_model.encoder.layers.1.layer_norm1.bias");
    assert_eq!(norm["weight_decay"].as_f64(), Some(0.0), "{norm}");
    let text = tensor("text_model.embeddings.token_embedding.weight");
    assert!(text["group"].is_null() && text["lr"].is_null(), "{text}");
    let numel: i64 = tensors
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .product::<i64>()
        })
        .sum();
    assert_eq!(numel, r["parameters"]["total"].as_i64().unwrap());

    let grid = tmp.path().join("grid.png");
    let o = run(bin()
        .args([
            "preview-augment",
            "--images",
            "2",
            "--views",
            "3",
            "--config",
        ])
        .arg(smoke())
        .arg("--output")
        .arg(&grid)
        .arg("--set")
        .arg(train_source(&data)));
    assert!(o.status.success());
    // Legible cells: the 16-pixel views are scaled up to at least 96 pixels.
    assert!(image::open(&grid).unwrap().width() >= 4 * 96);

    let o = run(bin()
        .args(["bench", "--steps", "2", "--warmup", "1", "--config"])
        .arg(smoke())
        .arg("--set")
        .arg(train_source(&data)));
    assert!(o.status.success());
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(b["train_images_per_s"].as_f64().unwrap() > 0.0);
    assert!(b["median_step_s"].as_f64().unwrap() > 0.0);
    // The steps without their wait for batches are at least as fast as with it.
    let (train, step) = (
        b["train_images_per_s"].as_f64().unwrap(),
        b["step_images_per_s"].as_f64().unwrap(),
    );
    let share = b["loader_wait_share"].as_f64().unwrap();
    assert!(step >= train && (0.0..=1.0).contains(&share), "{b}");
    assert!((train / step - (1.0 - share)).abs() < 1e-6, "{b}");
    // On the CPU the memory figure is the process's resident peak, and says so.
    assert_eq!(b["memory_kind"], "host_rss", "{b}");
    assert!(b["peak_memory_mib"].as_f64().unwrap() > 10.0, "{b}");
    assert!(b["peak_reserved_mib"].is_null(), "{b}");
}

/// `AutoModelForImageClassification` and the image-classification pipeline of
/// the venv's transformers on `export` (with or without remote code) for `image`:
/// `{class, logits, label}`, after checking that loading reported no missing,
/// unexpected or newly initialised weights (nor remote code, when not asked for).
fn transformers_classifies(export: &Path, image: &str, remote_code: bool) -> serde_json::Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let o = Command::new(&python)
        .args([
            "-c",
            "import sys, json, torch\n\
from PIL import Image\n\
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline\n\
path, image, remote = sys.argv[1], sys.argv[2], sys.argv[3] == 'remote'\n\
model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=remote).eval()\n\
pixels = AutoImageProcessor.from_pretrained(path)(images=Image.open(image), return_tensors='pt').pixel_values\n\
with torch.no_grad(): logits = model(pixel_values=pixels).logits[0].tolist()\n\
top = pipeline('image-classification', model=path, trust_remote_code=remote)(image, top_k=1)[0]\n\
print(json.dumps({'class': type(model).__name__, 'logits': logits, 'label': top['label']}))\n",
        ])
        .arg(export)
        .arg(image)
        .arg(if remote_code { "remote" } else { "local" })
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    let mut bad = vec![
        "UNEXPECTED",
        "MISSING",
        "newly initialized",
        "were not used",
    ];
    if !remote_code {
        bad.push("trust_remote_code");
    }
    for b in bad {
        assert!(!err.contains(b), "loading reported {b}:\n{err}");
    }
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `eval --model model --data data`'s prediction row for the first image, after
/// checking that transformers (`remote_code` or not) gives its logits within
/// 1e-4; returns transformers' answer and our row.
fn transformers_agrees_with_eval(
    model: &Path,
    data: &Path,
    tmp: &Path,
    remote_code: bool,
) -> (serde_json::Value, serde_json::Value) {
    let preds = tmp.join("preds.jsonl");
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--output")
        .arg(&preds));
    assert!(o.status.success());
    let ours: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&preds)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let hf = transformers_classifies(model, ours["path"].as_str().unwrap(), remote_code);
    let (a, b) = (
        hf["logits"].as_array().unwrap(),
        ours["logits"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{hf} vs ours {ours}");
    for (a, b) in a.iter().zip(b) {
        assert!(
            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4,
            "{hf} vs ours {ours}"
        );
    }
    (hf, ours)
}

/// Writes four JPEG flavours of a 16x16 image with PIL into `argv[2]/cat/` and
/// prints the logits transformers gives each for the export `argv[1]`.
const JPEG_LOGITS: &str = r#"
import sys, os, json, torch, numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification
export, root = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(root, "cat"), exist_ok=True)
rng = np.random.default_rng(3)
y, x = np.mgrid[0:16, 0:16]
base = np.stack([8 * x, 8 * y, 128 + 60 * np.sin(x / 2.0)], -1) + rng.normal(0, 20, (16, 16, 3))
img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
files = {"baseline": (img, dict(subsampling=2)), "progressive": (img, dict(progressive=True)),
         "grey": (img.convert("L"), {}), "cmyk": (img.convert("CMYK"), {})}
for name, (im, kw) in files.items():
    im.save(os.path.join(root, "cat", name + ".jpg"), quality=85, **kw)
model = AutoModelForImageClassification.from_pretrained(export, trust_remote_code=True).eval()
proc = AutoImageProcessor.from_pretrained(export)
out = {}
for name in files:
    p = os.path.join(root, "cat", name + ".jpg")
    px = proc(images=Image.open(p), return_tensors="pt").pixel_values
    with torch.no_grad():
        out[p] = model(pixel_values=px).logits[0].tolist()
print(json.dumps(out))
"#;

/// JPEGs (baseline, progressive, grey, Adobe CMYK; PIL writes them at the
/// model's input size, so no resize can differ) give the export the same logits
/// in our `eval` as in transformers' `AutoImageProcessor` +
/// `AutoModelForImageClassification` on PIL's decode: our decoder is PIL's.
fn jpegs_give_transformers_logits(export: &Path, tmp: &Path) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let data = tmp.join("jpegs");
    let o = Command::new(&python)
        .args(["-c", JPEG_LOGITS])
        .arg(export)
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let preds = tmp.join("jpeg_preds.jsonl");
    let out = run(bin()
        .args(["eval", "--model"])
        .arg(export)
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(&preds));
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(rows.lines().count(), 4);
    for l in rows.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let path = v["path"].as_str().unwrap();
        let want = theirs[path].as_array().unwrap();
        for (a, b) in v["logits"].as_array().unwrap().iter().zip(want) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() < 1e-3, "{path}: ours {a}, transformers {b}");
        }
    }
}

/// The export's model card: Hugging Face metadata that huggingface_hub parses
/// (with the exported checkpoint's validation `accuracy`), the classes, and a
/// transformers snippet that, run as written, gives our logits for an image.
fn model_card_loads_and_its_snippet_gives_our_logits(
    export: &Path,
    prediction: &serde_json::Value,
    accuracy: f64,
) {
    let card = std::fs::read_to_string(export.join("README.md")).unwrap();
    assert!(
        card.starts_with("---\nlibrary_name: transformers\n"),
        "{card}"
    );
    for want in [
        "## Classes (3)",
        "0. cat",
        "2. fox",
        "## Training config",
        "[model.architecture]",
    ] {
        assert!(card.contains(want), "model card lacks {want:?}:\n{card}");
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let meta = Command::new(&python)
        .args([
            "-c",
            "import sys, json; from huggingface_hub import ModelCard; \
             d = ModelCard.load(sys.argv[1]).data.to_dict(); \
             print(json.dumps(d))",
        ])
        .arg(export.join("README.md"))
        .output()
        .unwrap();
    assert!(
        meta.status.success(),
        "{}",
        String::from_utf8_lossy(&meta.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    assert_eq!(meta["pipeline_tag"], "image-classification");
    let metric = &meta["model-index"][0]["results"][0]["metrics"][0];
    assert_eq!(metric["type"], "accuracy");
    assert!(
        (metric["value"].as_f64().unwrap() - accuracy).abs() < 1e-12,
        "{meta}"
    );
    // transformers' Auto class and pipeline load the classifier through the
    // export's modeling file, without missing or unused weights, with our logits.
    let image = prediction["path"].as_str().unwrap();
    let auto = transformers_classifies(export, image, true);
    let ours: Vec<f64> = prediction["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (a, b) in auto["logits"].as_array().unwrap().iter().zip(&ours) {
        assert!(
            (a.as_f64().unwrap() - b).abs() < 1e-4,
            "{auto} vs ours {ours:?}"
        );
    }
    let names = ["cat", "dog", "fox"];
    assert_eq!(
        auto["label"],
        names[prediction["pred"].as_u64().unwrap() as usize]
    );
    // The manual snippet (the last Python block), with this folder and image,
    // prints the predicted class; we also print its logits.
    let code = card
        .split("```python\n")
        .last()
        .and_then(|c| c.split("```").next())
        .unwrap()
        .replace("path/to/this/folder", &export.display().to_string())
        .replace("image.jpg", image);
    let code = format!("{code}\nimport json\nprint(json.dumps(logits[0].tolist()))\n");
    let o = Command::new(&python).args(["-c", &code]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let mut lines = out.lines();
    let label = lines.next().unwrap();
    let logits: Vec<f64> = serde_json::from_str(lines.next().unwrap()).unwrap();
    for (a, b) in logits.iter().zip(&ours) {
        assert!((a - b).abs() < 1e-4, "snippet {logits:?} vs ours {ours:?}");
    }
    assert_eq!(label, names[prediction["pred"].as_u64().unwrap() as usize]);
}

/// `data.test`: checked before the training, evaluated once at its end with the
/// checkpoint the validation selected, as `eval` of the run folder gives.
#[test]
fn a_test_set_is_evaluated_once_with_the_selected_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let test = tmp.path().join("test");
    make_folder(&test, 3);
    // Not quiet: the console line of the test result is checked.
    let mut args = train_args(tmp.path(), &data);
    args.retain(|a| a != "--quiet");
    args.extend([
        "--set".into(),
        format!(
            "data.test={{kind=\"image_folder\", path={:?}}}",
            test.display().to_string()
        ),
    ]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("test, once, with the selected checkpoint: accuracy"),
        "{}",
        stderr(&o)
    );
    let run_dir = tmp.path().join("smoke");
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("test.json")).unwrap()).unwrap();
    assert_eq!(t["test"]["images"], 9);
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&test));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["test"]["accuracy"], e["accuracy"]);
    assert_eq!(t["test"]["loss"], e["loss"]);
    // A test set that is not there fails before anything trains.
    let mut args = train_args(tmp.path(), &data);
    args.extend([
        "--set".into(),
        "run.name=\"typo\"".into(),
        "--set".into(),
        "data.test={kind=\"image_folder\", path=\"/nowhere/test\"}".into(),
    ]);
    let o = run(bin().args(&args));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nowhere/test"), "{}", stderr(&o));
    assert!(
        !tmp.path()
            .join("typo/checkpoints")
            .join("step-00000001")
            .exists()
    );
}

/// Every option of every command says what it does in `--help`.
#[test]
fn every_option_is_described_in_help() {
    let commands = [
        "",
        "train",
        "eval",
        "zero-shot",
        "predict",
        "export",
        "inspect",
        "preview-augment",
        "wise-ft",
        "compare",
        "bench",
    ];
    for c in commands {
        let mut cmd = bin();
        if !c.is_empty() {
            cmd.arg(c);
        }
        let o = cmd.arg("--help").output().unwrap();
        assert!(o.status.success(), "{c} --help");
        let help = String::from_utf8_lossy(&o.stdout).to_string();
        let options = help.split("Options:").nth(1).unwrap();
        for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
            // "  --name <VALUE>  what it does": the text after the option itself.
            let described = line
                .trim_start()
                .split("  ")
                .skip(1)
                .any(|part| !part.trim().is_empty() && !part.trim().starts_with("[default"));
            assert!(described, "`train-cli {c}`: {line:?} has no description");
        }
    }
}

/// `bench` on a fresh clone: configs/smoke.toml's data folder does not exist, so
/// it times generated images and says so.
#[test]
fn bench_generates_images_when_the_configs_data_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(bin()
        .current_dir(tmp.path())
        .args([
            "bench", "--steps", "2", "--warmup", "1", "--quiet", "--config",
        ])
        .arg(smoke()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bench: data/smoke/train does not exist: timing on 40 generated"),
        "{}",
        stderr(&o)
    );
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["steps"], 2);
    assert!(b["train_images_per_s"].as_f64().unwrap() > 0.0);
}

/// `preview-augment` needs no model files when the augmentation fixes its output
/// size: a hub id that is not downloaded (offline) is fine.
#[test]
fn preview_augment_needs_no_model_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let cfg = tmp.path().join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npretrained = \"openai/clip-vit-base-patch32\"\n[data]\ntrain = {{ kind = \"image_folder\", path = {:?} }}\nval_fraction = 0.25\ntrain_transforms = [{{ op = \"random_resized_crop\", size = 224 }}, {{ op = \"normalize\" }}]\neval_transforms = [{{ op = \"resize\", size = 224 }}, {{ op = \"center_crop\", size = 224 }}, {{ op = \"normalize\" }}]\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let grid = tmp.path().join("grid.png");
    let o = run(bin()
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path().join("hf"))
        .args(["preview-augment", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&grid));
    assert!(o.status.success(), "{}", stderr(&o));
    let (w, h) = image::image_dimensions(&grid).unwrap();
    assert!(w >= 224 && h >= 224, "{w}x{h}");
}

/// `eval --ema` and `export --ema` use the EMA weights saved beside the checkpoint;
/// a run without `train.ema` has none, and says so.
#[test]
fn ema_weights_are_evaluated_and_exported_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.ema={decay=0.5}".into()]);
    assert!(run(bin().args(&args)).status.success());
    let run_dir = tmp.path().join("smoke");
    let eval = |ema: bool| {
        let mut c = bin();
        c.args(["eval", "--model"])
            .arg(&run_dir)
            .arg("--data")
            .arg(&data);
        if ema {
            c.arg("--ema");
        }
        let o = run(&mut c);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (plain, ema) = (eval(false), eval(true));
    assert_ne!(plain["loss"], ema["loss"]);
    // The EMA evaluation of the run's last eval line equals eval --ema on the
    // best checkpoint when that is the last one: compare against the summary.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    if summary["best"]["step"] == summary["global_step"] {
        let logged = summary["last_eval"]["ema"]["loss"].as_f64().unwrap();
        let got = ema["loss"].as_f64().unwrap();
        assert!(
            (logged - got).abs() < 1e-4 * logged.abs().max(1.0),
            "{logged} vs {got}"
        );
    }
    let (a, b) = (tmp.path().join("plain"), tmp.path().join("ema"));
    for (out, flag) in [(&a, false), (&b, true)] {
        let mut c = bin();
        c.args(["export", "--checkpoint"])
            .arg(&run_dir)
            .arg("--output")
            .arg(out);
        if flag {
            c.arg("--ema");
        }
        assert!(run(&mut c).status.success());
    }
    assert_ne!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    // The EMA export evaluates as eval --ema did.
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(&b)
        .arg("--data")
        .arg(&data));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["accuracy"], ema["accuracy"]);
    assert!((m["loss"].as_f64().unwrap() - ema["loss"].as_f64().unwrap()).abs() < 1e-5);
    // An export has no EMA of its own.
    let o = run(bin()
        .args(["eval", "--ema", "--model"])
        .arg(&b)
        .arg("--data")
        .arg(&data));
    assert!(
        !o.status.success()
            && stderr(&o).contains("`--ema`")
            && stderr(&o).contains("no EMA weights"),
        "{}",
        stderr(&o)
    );
}

/// With stderr going to a file (nohup, Slurm, CI), the run logs plain step lines
/// (epoch, step of the run, loss, lr, images/s, elapsed, ETA) and no terminal codes.
#[test]
fn a_run_logged_to_a_file_prints_plain_step_lines_without_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let args: Vec<String> = train_args(tmp.path(), &data)
        .into_iter()
        .filter(|a| a != "--quiet")
        .collect();
    let o = run(bin().env_remove("RUST_LOG").args(&args));
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        !err.contains('\x1b'),
        "terminal codes in a log file:\n{err}"
    );
    // smoke: 9 images, batch 8 -> 2 steps per epoch, 3 epochs, a line per step.
    for step in 1..=6 {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("epoch {}/3 step {step}/6 loss ", (step + 1) / 2)))
            .unwrap_or_else(|| panic!("no line for step {step}:\n{err}"));
        assert!(
            line.contains(" img/s elapsed ") && line.contains(" eta "),
            "{line}"
        );
    }
    assert!(err.contains("eta 0:00"), "{err}");
    assert!(err.contains("evaluating after step 2..."), "{err}");
    // Each evaluation and checkpoint is printed once, as a human line (not a log
    // line as well).
    assert_eq!(err.matches(": val loss ").count(), 3, "{err}");
    assert_eq!(err.matches("checkpoint: ").count(), 3, "{err}");
    assert!(!err.contains("INFO"), "{err}");
}

#[test]
fn config_errors_name_the_key_the_value_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 2);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.epochz=3".into()]);
    let o = run(bin().args(&args));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("train.epochz") && stderr(&o).contains("smoke.toml"),
        "{}",
        stderr(&o)
    );

    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.precision=\"fp8\"".into()]);
    let o = run(bin().args(&args));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fp8"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));

    let args = train_args(tmp.path(), &tmp.path().join("no-such-folder"));
    let o = run(bin().args(&args));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no-such-folder") && stderr(&o).contains("data.train"),
        "{}",
        stderr(&o)
    );

    let o = run(bin().args(["--config", "/nonexistent/x.toml"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/x.toml"));
    // fp16 on the CPU trains, but not without a word.
    let mut args = train_args(tmp.path(), &data);
    args.extend(
        [
            "--set",
            "train.precision=\"fp16\"",
            "--set",
            "train.max_steps=1",
            "--set",
            "optim.schedule={kind=\"constant\"}",
            "--set",
            "run.name=\"fp16\"",
        ]
        .map(String::from),
    );
    let o = run(bin().args(&args));
    assert!(stderr(&o).contains("\"fp16\" on the CPU"), "{}", stderr(&o));
    // A --model that is no model says so (not "cannot resume from").
    let o = run(bin().args([
        "eval",
        "--model",
        data.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a model"), "{}", stderr(&o));
    // Counts of zero are refused, not silently raised to 1.
    let o = run(bin().args(["predict", "--model", "m", "--top-k", "0", "a.png"]));
    assert!(
        stderr(&o).contains("--top-k must be at least 1"),
        "{}",
        stderr(&o)
    );
    let o = run(bin().args([
        "bench",
        "--config",
        smoke().to_str().unwrap(),
        "--steps",
        "0",
    ]));
    assert!(
        stderr(&o).contains("--steps must be at least 1"),
        "{}",
        stderr(&o)
    );
    assert!(!o.status.success());
}

#[test]
fn full_config_without_weights_or_data_fails_fast_and_says_how_to_get_them() {
    let tmp = tempfile::tempdir().unwrap();
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/full.toml");
    let t0 = Instant::now();
    let o = run(bin()
        .current_dir(tmp.path())
        .arg("--config")
        .arg(&full)
        .arg("--output-dir")
        .arg(tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path().join("hf")));
    assert!(!o.status.success());
    assert!(t0.elapsed() < Duration::from_secs(5));
    let e = stderr(&o);
    assert!(
        e.contains("data/stanford-dogs-10/train") && e.contains("one sub-folder"),
        "{e}"
    );
    // With the data present, the missing weights are the error.
    make_folder(&tmp.path().join("data/stanford-dogs-10/train"), 1);
    make_folder(&tmp.path().join("data/stanford-dogs-10/val"), 1);
    let o = run(bin()
        .current_dir(tmp.path())
        .arg("--config")
        .arg(&full)
        .arg("--output-dir")
        .arg(tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path().join("hf")));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("openai/clip-vit-base-patch32"),
        "{}",
        stderr(&o)
    );
}

/// A long smoke run in `tmp`, once its first checkpoint is written.
fn running(tmp: &Path) -> std::process::Child {
    let data = tmp.join("data");
    make_folder(&data, 8);
    let mut args = train_args(tmp, &data);
    args.extend(["--set".into(), "train.epochs=100000".into()]);
    let child = bin()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while clip_train::latest_checkpoint(&tmp.join("smoke")).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_and_sighup_checkpoint_and_exit_with_their_codes_a_second_signal_exits_cleanly() {
    for (sig, code) in [("-TERM", 143), ("-HUP", 129)] {
        let tmp = tempfile::tempdir().unwrap();
        let child = running(tmp.path());
        signal(&child, sig);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{sig}: {}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("smoke/summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["interrupted"], true, "{sig}");
        assert!(
            stderr(&o).contains(concat!(
                "continue with: ",
                env!("CARGO_BIN_EXE_train-cli"),
                " --resume"
            )),
            "{sig}"
        );
    }
    // Two Ctrl-Cs in a row: out at once with 130, no abort or crash (134, 139), and
    // the run folder still resumes (its newest checkpoint is intact).
    let tmp = tempfile::tempdir().unwrap();
    let child = running(tmp.path());
    signal(&child, "-INT");
    signal(&child, "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let ckpt = clip_train::latest_checkpoint(&tmp.path().join("smoke"));
    assert!(ckpt.is_ok(), "{ckpt:?}");
}

#[test]
fn sigint_writes_a_resumable_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.epochs=400".into()]);
    let mut child = bin().args(&args).spawn().unwrap();
    let metrics = tmp.path().join("smoke").join("metrics.jsonl");
    let t0 = Instant::now();
    // Wait until training is under way (the first evaluation is written).
    while std::fs::read_to_string(&metrics).map_or(true, |s| !s.contains("eval")) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let run_dir = tmp.path().join("smoke");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["interrupted"], true);
    let step = summary["global_step"].as_u64().unwrap();
    assert!(step < 1200);
    let metrics_before = std::fs::read(run_dir.join("metrics.jsonl")).unwrap();
    let csv_before = std::fs::read(run_dir.join("metrics.csv")).unwrap();
    // Resume with a shorter run so it ends quickly: the checkpoint is found and used.
    let o = run(bin()
        .arg("--resume")
        .arg(&run_dir)
        .args(["--set", &format!("train.max_steps={}", step + 2)]));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains(&format!("step {step}")),
        "{}",
        stderr(&o)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["global_step"].as_u64().unwrap(), step + 2);
    // The warning names the key that changed.
    assert!(
        stderr(&o).contains(&format!(
            "config differs from the one {}",
            run_dir.join("checkpoints").display()
        )) && stderr(&o).contains(&format!("train.max_steps: (unset) -> {}", step + 2)),
        "{}",
        stderr(&o)
    );
    // The same folder written another way, nothing changed: no warning.
    let o = run(bin()
        .arg("--resume")
        .arg(tmp.path().join(".").join("smoke").join(""))
        .arg("--quiet"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("config differs"), "{}", stderr(&o));
    // The lines written up to the checkpoint are kept byte for byte, then appended to.
    for (name, before) in [
        ("metrics.jsonl", metrics_before),
        ("metrics.csv", csv_before),
    ] {
        let after = std::fs::read(run_dir.join(name)).unwrap();
        assert!(
            after.len() > before.len() && after.starts_with(&before),
            "{name} was rewritten on resume"
        );
    }
    // --config beside --resume is refused, not silently ignored.
    let o = run(bin().arg("--resume").arg(&run_dir).args([
        "--config",
        smoke().to_str().unwrap(),
        "--quiet",
    ]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exclude each other"), "{}", stderr(&o));
}

#[test]
fn compare_produces_every_row_and_reuses_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 6);
    let tok = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model/tokenizer/tokenizer.json");
    let out = tmp.path().join("cmp");
    let args = |out: &Path| -> Vec<String> {
        vec![
            "compare".into(),
            "--quiet".into(),
            "--config".into(),
            smoke().display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--set".into(),
            train_source(&data),
            "--set".into(),
            format!("model.tokenizer={:?}", tok.display().to_string()),
            // The test tokenizer's vocabulary and end-of-text id.
            "--set".into(),
            TEST_TEXT_TOWER.into(),
            "--set".into(),
            "train.epochs=2".into(),
            "--set".into(),
            "compare.wise_alphas=[0.0, 0.5, 1.0]".into(),
            "--set".into(),
            "compare.methods=[\"zero_shot\", \"linear_probe\", \"lora_r8\", \"lora_r16\", \"full\", \"wise_ft\", \"flyp\", \"soup\"]".into(),
        ]
    };
    let o = run(bin().args(args(&out)));
    assert!(o.status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "zero_shot",
            "linear_probe",
            "lora_r8",
            "lora_r16",
            "full",
            "wise_ft",
            "flyp",
            "soup_uniform",
            "soup_greedy"
        ]
    );
    // The soups of the five trained rows, exported, with their figures in the rows.
    let soup: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soup/soup.json")).unwrap())
            .unwrap();
    assert_eq!(soup["ingredients"].as_array().unwrap().len(), 5, "{soup}");
    assert_eq!(soup["images"], report["val_images"], "{soup}");
    for kind in ["uniform", "greedy"] {
        let row = rows
            .iter()
            .find(|r| r["method"] == format!("soup_{kind}"))
            .unwrap();
        assert_eq!(row["best_val_accuracy"], soup[kind]["accuracy"], "{row}");
        assert!(out.join(format!("soup/{kind}/model.safetensors")).is_file());
    }
    for r in rows {
        let acc = r["best_val_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r}");
    }
    for (m, epochs) in [
        ("linear_probe", 2),
        ("lora_r8", 2),
        ("full", 2),
        ("flyp", 2),
    ] {
        let r = rows.iter().find(|r| r["method"] == m).unwrap();
        assert_eq!(
            r["accuracy_per_epoch"].as_array().unwrap().len(),
            epochs,
            "{m}"
        );
    }
    let share = |m: &str| {
        rows.iter().find(|r| r["method"] == m).unwrap()["trainable_share"]
            .as_f64()
            .unwrap()
    };
    assert!(
        share("linear_probe") < share("lora_r8")
            && share("lora_r8") < share("lora_r16")
            && share("lora_r16") < share("full")
            && share("full") < share("flyp"),
        "FLYP trains the text tower too"
    );
    let wise = report["wise_ft"]["points"].as_array().unwrap();
    assert_eq!(wise.len(), 3);
    // WiSE-FT at alpha 1 is the full run's final model.
    let full_last = rows.iter().find(|r| r["method"] == "full").unwrap()["accuracy_per_epoch"][1]
        .as_f64()
        .unwrap();
    assert_eq!(wise[2]["accuracy"].as_f64().unwrap(), full_last);
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("| lora_r16 |")
    );
    assert!(out.join("accuracy.png").is_file() && out.join("accuracy_bars.png").is_file());
    // A second compare reuses the finished runs instead of training again.
    let stamp = std::fs::metadata(out.join("full/summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    let o = run(bin().args(args(&out)));
    assert!(o.status.success());
    assert!(!stderr(&o).contains("compare: training"));
    assert_eq!(
        std::fs::metadata(out.join("full/summary.json"))
            .unwrap()
            .modified()
            .unwrap(),
        stamp
    );
    // A changed config is not answered with the old rows: refused, naming the
    // key, until --rerun trains the row again.
    let mut changed = args(&out);
    changed.extend([
        "--set".into(),
        "train.epochs=1".into(),
        "--set".into(),
        "compare.methods=[\"full\"]".into(),
    ]);
    let o = run(bin().args(&changed));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("train.epochs: 2 -> 1") && stderr(&o).contains("--rerun"),
        "{}",
        stderr(&o)
    );
    changed.push("--rerun".into());
    let o = run(bin().args(&changed));
    assert!(o.status.success());
    assert!(stderr(&o).contains("compare: training"), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["epochs"], 1);
    assert_eq!(
        report["rows"][0]["accuracy_per_epoch"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `zero-shot` of tiny-a on the labelled images under `fixtures/<images>`: each
/// image's logits (sorted by path, `count` of them) against transformers'
/// (`CLIPModel` on `CLIPImageProcessor`'s pixels of PIL's decode, both backends)
/// in `fixtures/<reference>`, from scripts/gen_eval_fixtures.py: within 0.01 of
/// the PIL backend's, `tv_tol` of the torchvision backend's.
fn zero_shot_matches_transformers(images: &str, reference: &str, count: usize, tv_tol: f32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let preds = tmp.path().join("preds.jsonl");
    let out = run(bin().args([
        "zero-shot",
        "--model",
        &root.join("model/tiny-a").display().to_string(),
        "--data",
        &root.join(images).display().to_string(),
        "--template",
        "a photo of a {}.",
        "--output",
        &preds.display().to_string(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(root.join(reference)).unwrap();
    let refs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = |key: &str| -> Vec<f32> {
        refs.tensor(key)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (pil, tv) = (logits("logits.pil"), logits("logits.tv"));
    let mut rows: Vec<(String, Vec<f32>)> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let logits = v["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (v["path"].as_str().unwrap().to_string(), logits)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rows.len(), count, "one prediction per fixture image");
    for (i, (path, ours)) in rows.iter().enumerate() {
        // Same pixels as the PIL backend (float rounding only: JPEGs decode as
        // PIL does); the torchvision backend resizes a level off here and there.
        for (backend, theirs, tol) in [("pil", &pil, 0.01), ("tv", &tv, tv_tol)] {
            for (c, o) in ours.iter().enumerate() {
                let t = theirs[i * 2 + c];
                assert!(
                    (o - t).abs() < tol,
                    "{path} class {c}: ours {o}, transformers ({backend} processor) {t}"
                );
            }
        }
    }
}

/// `zero-shot` on a CLIP folder gives transformers' logits on images of every
/// aspect ratio, including those where torchvision's centre crop would be a pixel
/// off.
/// PyTorch checkpoints (`pytorch_model.bin`, what `torch.save` writes, as
/// transformers 4 saved them: the state dict as an `OrderedDict` with its
/// `_metadata`; sharded with `pytorch_model.bin.index.json`; in fp16) load as
/// the same model's safetensors: zero-shot gives the same logits; a pickle that
/// names anything else (here `os.system`) is refused by name and never runs.
#[test]
fn pytorch_bin_checkpoints_load_as_their_safetensors_and_code_never_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tiny = root.join("tests/fixtures/model/tiny-a");
    let marker = tmp.path().join("executed");
    let o = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/make_bin_checkpoints.py"))
        .arg(&tiny)
        .arg(tmp.path())
        .arg(&marker)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let logits = |model: &Path| -> Vec<Vec<f64>> {
        let preds = tmp.path().join("preds.jsonl");
        let o = run(bin()
            .args(["zero-shot", "--quiet", "--model"])
            .arg(model)
            .arg("--data")
            .arg(root.join("tests/fixtures/eval/images"))
            .arg("--output")
            .arg(&preds));
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(&preds)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let want = logits(&tiny);
    assert!(!want.is_empty());
    assert_eq!(logits(&tmp.path().join("bin")), want);
    assert_eq!(logits(&tmp.path().join("sharded")), want);
    let fp16 = logits(&tmp.path().join("fp16"));
    for (a, b) in fp16.iter().flatten().zip(want.iter().flatten()) {
        assert!((a - b).abs() < 0.05, "fp16 weights: {a} vs {b}");
    }
    let o = run(bin()
        .env_remove("RUST_BACKTRACE")
        .args(["zero-shot", "--model"])
        .arg(tmp.path().join("evil"))
        .arg("--data")
        .arg(root.join("tests/fixtures/eval/images")));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("evil/pytorch_model.bin")
            && stderr(&o).contains("it names `posix.system`")
            && stderr(&o).contains("refused"),
        "{}",
        stderr(&o)
    );
    assert!(!marker.exists(), "the pickle's code ran");
}

#[test]
fn zero_shot_logits_match_transformers_on_non_square_images() {
    // A one-pixel crop shift moves these noisy images' logits by 0.1-0.4: the
    // torchvision backend's rounding of the offset is 0.05 away at most.
    zero_shot_matches_transformers("eval/images", "eval/reference.safetensors", 9, 0.05);
}

/// The same on JPEGs of every flavour (baseline, progressive, 4:4:4 / 4:2:2 /
/// 4:2:0, restart markers, grey, Adobe CMYK, YCCK, arithmetic coding, an EXIF
/// orientation left as stored): our decoder's pixels are PIL's.
#[test]
fn zero_shot_logits_match_transformers_on_jpegs_of_every_flavour() {
    zero_shot_matches_transformers("eval/jpeg", "eval/reference_jpeg.safetensors", 11, 0.01);
}

/// `--exif-orientation apply` turns the JPEG with an EXIF orientation upright
/// before zero-shot classifying it (transformers' `load_image` does that); every
/// other image, and the default, stay as stored.
#[test]
fn zero_shot_turns_images_by_their_exif_orientation_when_asked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let logits = |extra: &[&str], name: &str| -> Vec<(String, String)> {
        let preds = tmp.path().join(name);
        let out = run(bin()
            .args(["zero-shot", "--model"])
            .arg(root.join("model/tiny-a"))
            .arg("--data")
            .arg(root.join("eval/jpeg"))
            .arg("--output")
            .arg(&preds)
            .args(extra));
        assert!(out.status.success(), "{}", stderr(&out));
        let mut rows: Vec<(String, String)> = std::fs::read_to_string(&preds)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["path"].as_str().unwrap().to_string(),
                    v["logits"].to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let stored = logits(&[], "stored.jsonl");
    assert_eq!(
        stored,
        logits(&["--exif-orientation", "ignore"], "ignore.jsonl")
    );
    let turned = logits(&["--exif-orientation", "apply"], "apply.jsonl");
    for ((path, a), (_, b)) in stored.iter().zip(&turned) {
        assert_eq!(a != b, path.ends_with("exif6.jpg"), "{path}: {a} vs {b}");
    }
    let o = run(bin().args([
        "zero-shot",
        "--exif-orientation",
        "sideways",
        "--model",
        "m",
        "--data",
        "d",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"ignore\" or \"apply\""),
        "{}",
        stderr(&o)
    );
}

/// `model.head.kind = "hf"` trains transformers' `CLIPForImageClassification`
/// head; its export is that class: `AutoModelForImageClassification` and the
/// pipeline load it with no remote code and no weight warnings, with our logits.
#[test]
fn hf_head_exports_load_in_transformers_without_remote_code() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "model.head={kind=\"hf\"}".into()]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    let run_dir = tmp.path().join("smoke");
    let export = tmp.path().join("export");
    export_run(&run_dir, &export);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "CLIPForImageClassification");
    assert!(config.get("auto_map").is_none(), "{config}");
    assert!(!export.join("modeling_clip_finetune.py").exists());
    let card = std::fs::read_to_string(export.join("README.md")).unwrap();
    assert!(card.contains("`CLIPForImageClassification`"), "{card}");
    // Our logits, from the export.
    let (hf, first) = transformers_agrees_with_eval(&export, &data, tmp.path(), false);
    assert_eq!(hf["class"], "CLIPForImageClassification");
    assert_eq!(first["logits"].as_array().unwrap().len(), 3);
    let names = ["cat", "dog", "fox"];
    assert_eq!(hf["label"], names[first["pred"].as_u64().unwrap() as usize]);
}

/// `train.report_to = ["tensorboard"]`: the event file that TensorBoard's own
/// reader loads holds the step and eval figures of metrics.jsonl and the config as
/// text; a resume from an earlier checkpoint cuts the events after it, so every
/// step is in the file once.
#[test]
fn tensorboard_events_read_back_and_resume_cuts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let mut args = train_args(tmp.path(), &data);
    args.retain(|a| a != "--quiet");
    args.extend(["--set".into(), "train.report_to=[\"tensorboard\"]".into()]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("tensorboard --logdir"),
        "{}",
        stderr(&o)
    );
    let run_dir = tmp.path().join("smoke");
    let tb = run_dir.join("tensorboard");
    let read = || {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
        let o = Command::new(&python)
            .args([
                "-c",
                "import sys, json, glob\n\
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader\n\
d = sys.argv[1]\n\
ea = EventAccumulator(d, size_guidance={'scalars': 0, 'tensors': 0})\n\
ea.Reload()\n\
files = glob.glob(d + '/events.out.tfevents.*')\n\
raw = [e.step for f in files for e in EventFileLoader(f).Load() for v in e.summary.value if v.tag == 'train/loss']\n\
print(json.dumps({'files': len(files), 'tags': ea.Tags()['scalars'],\n\
  'loss': [[e.step, e.value] for e in ea.Scalars('train/loss')],\n\
  'accuracy': [[e.step, e.value] for e in ea.Scalars('val/accuracy')],\n\
  'config': ea.Tensors('config')[0].tensor_proto.string_val[0].decode(), 'raw_loss_steps': raw}))\n",
            ])
            .arg(&tb)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let events = read();
    assert_eq!(events["files"], 1);
    for tag in ["train/lr", "train/grad_norm", "val/loss", "val/macro_f1"] {
        assert!(
            events["tags"].as_array().unwrap().iter().any(|t| t == tag),
            "{tag} missing: {events}"
        );
    }
    assert!(
        events["config"]
            .as_str()
            .unwrap()
            .contains("[model.architecture]"),
        "{events}"
    );
    // The figures of metrics.jsonl (as float32).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pairs = |kind: &str, field: &dyn Fn(&serde_json::Value) -> f64| -> Vec<(u64, f64)> {
        lines
            .iter()
            .filter(|l| l["kind"] == kind)
            .map(|l| (l["step"].as_u64().unwrap(), field(l)))
            .collect()
    };
    let from_tb = |name: &str| -> Vec<(u64, f64)> {
        events[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    for (tb_pairs, ours) in [
        (
            from_tb("loss"),
            pairs("step", &|l| l["loss"].as_f64().unwrap()),
        ),
        (
            from_tb("accuracy"),
            pairs("eval", &|l| l["val"]["accuracy"].as_f64().unwrap()),
        ),
    ] {
        assert_eq!(tb_pairs.len(), ours.len(), "{tb_pairs:?} vs {ours:?}");
        assert!(!ours.is_empty());
        for ((s1, v1), (s2, v2)) in tb_pairs.iter().zip(&ours) {
            assert!(
                s1 == s2 && (v1 - v2).abs() <= 1e-6 * v2.abs().max(1.0),
                "{tb_pairs:?} vs {ours:?}"
            );
        }
    }
    // Back to the step-6 checkpoint: steps 7-9 are cut, then written again once.
    std::fs::remove_dir_all(run_dir.join("checkpoints/step-00000009")).unwrap();
    let o = run(bin().arg("--resume").arg(&run_dir));
    assert!(o.status.success());
    assert!(stderr(&o).contains("step 6"), "{}", stderr(&o));
    let events = read();
    assert_eq!(events["files"], 1);
    assert_eq!(
        events["raw_loss_steps"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9])
    );
}

/// `convert` writes an image folder as WebDataset shards; a run on the shards
/// equals the run on the folder (same seed: same classes, order, pixels, so the
/// same losses and accuracy), and `eval --data` takes the shard pattern.
#[test]
fn webdataset_shards_from_convert_train_like_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let shards = tmp.path().join("shards");
    let o = run(bin()
        .args(["convert", "--data"])
        .arg(&data)
        .arg("--output")
        .arg(&shards)
        .args(["--shard-size", "5", "--prefix", "train"]));
    assert!(o.status.success());
    let entry = String::from_utf8(o.stdout).unwrap();
    let pattern = shards.join("train-{000000..000004}.tar");
    assert_eq!(
        entry.trim(),
        format!(
            "{{ kind = \"webdataset\", path = {:?}, class_names = [\"cat\",\"dog\",\"fox\"] }}",
            pattern.display().to_string()
        )
    );
    let losses = |name: &str, source: String| {
        let (o, figures) = train_figures(tmp.path(), &data, name, source.trim(), &[]);
        assert!(o.status.success());
        figures
    };
    let folder = losses(
        "folder",
        format!(
            "{{kind=\"image_folder\", path={:?}}}",
            data.display().to_string()
        ),
    );
    let tar = losses("tar", entry);
    assert_eq!(folder.len(), 12);
    assert_eq!(folder, tar);
    // eval reads a shard pattern given as --data (classes from .cls + .txt).
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(tmp.path().join("tar"))
        .arg("--data")
        .arg(&pattern));
    assert!(o.status.success());
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["images"], 24);
}

/// Shards written by Python's tarfile, as other tools write them: labels as
/// `.txt` names and `.json` objects, a sample without a label (left out, named),
/// and an undecodable image: an error naming shard and key, or with
/// `on_corrupt = "skip"` a warning naming them and a count.
#[test]
fn webdataset_shards_from_python_with_a_corrupt_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 6);
    let shards = tmp.path().join("wds");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let o = Command::new(&python)
        .args([
            "-c",
            r#"
import sys, os, io, json, tarfile
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
files = sorted((c, f) for c in os.listdir(src) for f in os.listdir(os.path.join(src, c)))
def add(t, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
for s in range(2):
    with tarfile.open(os.path.join(out, f"part-{s}.tar"), "w") as t:
        for i, (c, f) in enumerate(files[s::2]):
            key = f"{s}_{i:04d}"
            add(t, key + ".png", open(os.path.join(src, c, f), "rb").read())
            if i % 2:
                add(t, key + ".json", json.dumps({"label": c}).encode())
            else:
                add(t, key + ".txt", c.encode())
        add(t, "nolabel.png", open(os.path.join(src, c, f), "rb").read())
        if s == 1:
            add(t, "broken.png", b"not a png")
            add(t, "broken.txt", b"dog")
"#,
        ])
        .arg(&data)
        .arg(&shards)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let source = format!(
        "data.train={{kind=\"webdataset\", path={:?}}}",
        shards.join("part-*.tar").display().to_string()
    );
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), source.clone()]);
    let o = run(bin().args(&args));
    assert_eq!(o.status.code(), Some(1));
    let broken = format!("{}:broken.png", shards.join("part-1.tar").display());
    assert!(stderr(&o).contains(&broken), "{}", stderr(&o));
    args.extend([
        "--set".into(),
        "data.loader.on_corrupt=\"skip\"".into(),
        "--set".into(),
        "data.loader.max_corrupt_share=0.2".into(),
    ]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("skipping unreadable image {broken}")),
        "{err}"
    );
    assert!(err.contains("part-0.tar:nolabel: no label member"), "{err}");
    // The broken image counts once (in training or validation).
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("smoke/summary.json")).unwrap(),
    )
    .unwrap();
    let corrupt = summary["corrupt_train_images"].as_u64().unwrap()
        + summary["corrupt_val_images"].as_u64().unwrap();
    assert_eq!(corrupt, 1, "{summary}");
}

/// `eval --data` matches classes by name: a subset of the model's classes, and
/// shards labelled by index with the names in another order (a source table as
/// `--data`), give the same per-image predictions as the full folder; a class the
/// model lacks is an error naming it. `predict` takes folders and globs, and an
/// unreadable image gets an error row while the others are classified.
#[test]
fn eval_matches_classes_by_name_and_predict_reports_bad_images_per_row() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let o = run(bin().args(train_args(tmp.path(), &data)));
    assert!(o.status.success());
    let run_dir = tmp.path().join("smoke");
    // Per-image predicted class names of an eval, keyed by file name.
    let eval = |data: &str, out: &str| -> (Output, Vec<(String, String)>) {
        let preds = tmp.path().join(out);
        let o = run(bin()
            .args(["eval", "--model"])
            .arg(&run_dir)
            .args(["--data", data, "--output"])
            .arg(&preds));
        let rows = std::fs::read_to_string(&preds)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let names = ["cat", "dog", "fox"];
                let path = v["path"].as_str().unwrap().to_string();
                (
                    path.rsplit(['/', ':']).next().unwrap().to_string(),
                    format!(
                        "{} -> {}",
                        names[v["label"].as_u64().unwrap() as usize],
                        names[v["pred"].as_u64().unwrap() as usize]
                    ),
                )
            })
            .collect::<Vec<_>>();
        (o, rows)
    };
    let (o, full) = eval(data.to_str().unwrap(), "full.jsonl");
    assert!(o.status.success());
    assert_eq!(full.len(), 12);
    // A subset: dog and fox only.
    let subset = tmp.path().join("subset");
    for c in ["dog", "fox"] {
        copy_dir(&data.join(c), &subset.join(c));
    }
    let (o, rows) = eval(subset.to_str().unwrap(), "subset.jsonl");
    assert!(o.status.success());
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["images"], 8);
    assert!(m["per_class"][0].is_null(), "{m}");
    let expected: Vec<_> = full
        .iter()
        .filter(|(_, r)| !r.starts_with("cat"))
        .cloned()
        .collect();
    assert_eq!(rows, expected);
    // Shards labelled by index in another class order, the names given in --data.
    let shards = tmp.path().join("shards");
    let o = run(bin()
        .args(["convert", "--data"])
        .arg(&data)
        .arg("--output")
        .arg(&shards));
    assert!(o.status.success());
    let renumber =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
            .args([
                "-c",
                r#"
import sys, io, tarfile
src, dst = sys.argv[1], sys.argv[2]
order = {"fox": 0, "cat": 1, "dog": 2}
with tarfile.open(src) as t, tarfile.open(dst, "w") as out:
    members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    for name, data in members.items():
        key, ext = name.split(".", 1)
        if ext == "txt":
            continue
        if ext == "cls":
            data = str(order[members[key + ".txt"].decode()]).encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
"#,
            ])
            .arg(shards.join("data-000000.tar"))
            .arg(tmp.path().join("renumbered.tar"))
            .output()
            .unwrap();
    assert!(
        renumber.status.success(),
        "{}",
        String::from_utf8_lossy(&renumber.stderr)
    );
    let table = format!(
        "{{ kind = \"webdataset\", path = {:?}, class_names = [\"fox\", \"cat\", \"dog\"] }}",
        tmp.path().join("renumbered.tar").display().to_string()
    );
    let (o, rows) = eval(&table, "shards.jsonl");
    assert!(o.status.success());
    // The shard keys are the folder's indices: compare the (label -> pred) pairs.
    let pairs = |r: &[(String, String)]| {
        let mut v: Vec<String> = r.iter().map(|(_, p)| p.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(pairs(&rows), pairs(&full));
    // A class the model does not have.
    let wolf = tmp.path().join("wolf");
    copy_dir(&data.join("cat"), &wolf.join("cat"));
    copy_dir(&data.join("dog"), &wolf.join("wolf"));
    let (o, _) = eval(wolf.to_str().unwrap(), "wolf.jsonl");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("1 of its classes are not among the model's 3: \"wolf\""),
        "{}",
        stderr(&o)
    );
    // predict: a folder, a glob, and an unreadable file.
    std::fs::write(tmp.path().join("broken.png"), b"not a png").unwrap();
    let o = run(bin()
        .args(["predict", "--json", "--model"])
        .arg(&run_dir)
        .arg(data.join("cat"))
        .arg(tmp.path().join("broken.png"))
        .arg(format!("{}/dog/*.png", data.display())));
    assert_eq!(o.status.code(), Some(1));
    let rows: Vec<serde_json::Value> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 9);
    assert!(
        rows[4]["error"].as_str().unwrap().contains("broken.png"),
        "{}",
        rows[4]
    );
    assert_eq!(rows.iter().filter(|r| r["top"].is_array()).count(), 8);
    assert!(stderr(&o).contains("1 of 9 image(s) could not be classified"));
    // Data without a single image is an error, not an accuracy of 0.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("cat")).unwrap();
    std::fs::write(empty.join("cat/notes.txt"), "not an image").unwrap();
    let (o, _) = eval(&empty.display().to_string(), "empty.jsonl");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("holds no images to evaluate"),
        "{}",
        stderr(&o)
    );
}

/// Trains the smoke config on `source` as `data.train` (run `name` under `tmp`,
/// `extra` arguments after): the process's output and the run's figures in
/// metrics.jsonl order (each step line's loss, each evaluation's accuracy), none
/// when the run wrote no metrics.
fn train_figures(
    tmp: &Path,
    data: &Path,
    name: &str,
    source: &str,
    extra: &[&str],
) -> (Output, Vec<f64>) {
    let mut args = train_args(tmp, data);
    args.extend([
        "--set".into(),
        format!("data.train={source}"),
        "--set".into(),
        format!("run.name=\"{name}\""),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run(bin().args(&args));
    let figures = std::fs::read_to_string(tmp.join(name).join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap();
            match l["kind"].as_str().unwrap() {
                "step" => l["loss"].as_f64().unwrap(),
                _ => l["val"]["accuracy"].as_f64().unwrap(),
            }
        })
        .collect();
    (o, figures)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Parquet as Hugging Face `datasets` writes it (image bytes, a `ClassLabel`
/// column; by scripts/to_parquet.py) trains exactly like the same images as a
/// folder; Parquet written by
/// pyarrow with image paths and string labels evaluates the same; a row whose
/// image cannot be decoded is an error naming file and row, or skipped and named.
#[test]
fn parquet_from_datasets_trains_like_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let o = Command::new(&python)
        .args([
            "-c",
            r#"
import sys, os
import pyarrow as pa, pyarrow.parquet as pq
src, out = sys.argv[1], sys.argv[2]
classes = sorted(os.listdir(src))
rows = [(c, os.path.join(src, c, f)) for c in classes for f in sorted(os.listdir(os.path.join(src, c)))]
image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
table = pa.table({
    "img": pa.array([{"bytes": None, "path": p} for _, p in rows] + [{"bytes": b"garbage", "path": None}], type=image),
    "name": pa.array([c for c, _ in rows] + ["dog"]),
})
pq.write_table(table, os.path.join(out, "paths.parquet"), row_group_size=5)
"#,
        ])
        .arg(&data)
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The HF-layout file, by the documented script (row groups of 5).
    let hf_file = tmp.path().join("hf.parquet");
    let o = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/to_parquet.py"))
        .arg(&data)
        .arg(&hf_file)
        .args(["--row-group-size", "5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(&python)
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; f = pq.ParquetFile(sys.argv[1]); \
             print(f.num_row_groups, f.schema_arrow.metadata[b'huggingface'].decode())",
        ])
        .arg(&hf_file)
        .output()
        .unwrap();
    let meta = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        meta.starts_with("5 ") && meta.contains(r#""names": ["cat", "dog", "fox"]"#),
        "{meta}"
    );
    let metrics = |name: &str, source: &str, extra: &[&str]| {
        train_figures(tmp.path(), &data, name, source, extra)
    };
    let folder = format!(
        "{{kind=\"image_folder\", path={:?}}}",
        data.display().to_string()
    );
    let hf = format!(
        "{{kind=\"parquet\", path={:?}}}",
        tmp.path().join("hf.parquet").display().to_string()
    );
    let (_, a) = metrics("folder", &folder, &[]);
    let (o, b) = metrics("hf", &hf, &[]);
    assert!(o.status.success());
    assert_eq!(a.len(), 12);
    assert_eq!(a, b);
    // Paths and string labels, in other columns; the garbage row stops the run.
    let paths = tmp.path().join("paths.parquet");
    let table = format!(
        "{{kind=\"parquet\", path={:?}, image_column=\"img\", label_column=\"name\"}}",
        paths.display().to_string()
    );
    let bad_row = format!("{}:row 24", paths.display());
    let (o, _) = metrics("paths", &table, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&bad_row), "{}", stderr(&o));
    let (o, _) = metrics(
        "skip",
        &table,
        &[
            "--set",
            "data.loader.on_corrupt=\"skip\"",
            "--set",
            "data.loader.max_corrupt_share=0.1",
        ],
    );
    assert!(o.status.success());
    assert!(
        stderr(&o).contains(&format!("skipping unreadable image {bad_row}")),
        "{}",
        stderr(&o)
    );
    // eval of the Parquet-trained model on the folder and on the HF file agree.
    let eval = |data: &str| {
        let o = run(bin()
            .args(["eval", "--model"])
            .arg(tmp.path().join("hf"))
            .args(["--data", data]));
        assert!(o.status.success());
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            m["images"].as_u64().unwrap(),
            m["accuracy"].as_f64().unwrap(),
        )
    };
    assert_eq!(
        eval(data.to_str().unwrap()),
        eval(tmp.path().join("hf.parquet").to_str().unwrap())
    );
}

/// `train.objective = "contrastive"` (FLYP) trains both towers on captions of the
/// class names; its classifier is the zero-shot head of the fine-tuned text tower:
/// `eval` of the export equals `zero-shot` of the same weights with the same
/// template. Misconfigurations are errors naming the key.
#[test]
fn contrastive_runs_classify_with_their_own_text_tower() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let tok = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model/tokenizer/tokenizer.json");
    let mut args = train_args(tmp.path(), &data);
    args.extend(
        [
            "train.objective=\"contrastive\"".to_string(),
            "optim.frozen_towers=[]".into(),
            "train.epochs=6".into(),
            format!("model.tokenizer={:?}", tok.display().to_string()),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_string(), s]),
    );
    // The test tokenizer's end-of-text id is not the tiny preset's.
    let o = run(bin().args(&args));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("end-of-text token is id 1513")
            && stderr(&o).contains("`eos_token_id` is 49407"),
        "{}",
        stderr(&o)
    );
    args.extend(["--set".into(), TEST_TEXT_TOWER.into()]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    let run_dir = tmp.path().join("smoke");
    let evals = eval_records(&run_dir);
    let (first, last) = (&evals[0], &evals[evals.len() - 1]);
    assert!(
        last["train_loss"].as_f64().unwrap() < first["train_loss"].as_f64().unwrap(),
        "{first} {last}"
    );
    assert_eq!(last["val"]["accuracy"], 1.0, "{last}");
    let export = tmp.path().join("export");
    export_run(&run_dir, &export);
    std::fs::copy(&tok, export.join("tokenizer.json")).unwrap();
    let metrics = |sub: &str, flag: &str| -> serde_json::Value {
        let o = run(bin()
            .args([sub, flag])
            .arg(&export)
            .arg("--data")
            .arg(&data));
        assert!(o.status.success());
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // `eval` of the export equals `zero-shot` of the same weights: accuracy,
    // confusion and loss (the loss depends on the head's logit multiplier).
    let same_as_zero_shot = |what: &str| {
        let (ours, zero_shot) = (metrics("eval", "--model"), metrics("zero-shot", "--model"));
        assert_eq!(ours["accuracy"], zero_shot["accuracy"], "{what}");
        assert_eq!(ours["confusion"], zero_shot["confusion"], "{what}");
        let (a, b) = (
            ours["loss"].as_f64().unwrap(),
            zero_shot["loss"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-5,
            "{what} eval loss {a} vs zero-shot {b}"
        );
    };
    same_as_zero_shot("trained weights");
    // With EMA: the EMA's head is made from the EMA's text tower.
    let o = run(bin().args(&args).args([
        "--set",
        "train.ema={decay=0.8}",
        "--set",
        "run.overwrite=true",
    ]));
    assert!(o.status.success());
    // The earlier export there is replaced whole (asked for).
    let o = run(bin()
        .args(["export", "--overwrite", "--ema", "--checkpoint"])
        .arg(&run_dir)
        .arg("--output")
        .arg(&export));
    assert!(o.status.success());
    std::fs::copy(&tok, export.join("tokenizer.json")).unwrap();
    // ... with the EMA's logit scale as its multiplier.
    same_as_zero_shot("EMA");
    // What captions cannot do.
    let o = run(bin().args(&args).args([
        "--set",
        "data.loader.mix={mixup_alpha=0.8}",
        "--set",
        "run.overwrite=true",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`data.loader.mix`"), "{}", stderr(&o));
}

/// Image-caption pairs (open_clip's CSV): contrastive training on the data's own
/// captions, retrieval recall on a validation CSV with labels and captions,
/// checkpoints chosen by it, and `eval` of the chosen one giving the same recall.
#[test]
fn image_caption_csv_trains_on_its_captions_and_reports_retrieval() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let caption = |class: &str| match class {
        "cat" => "red stripes across",
        "dog" => "green stripes down",
        _ => "blue stripes across",
    };
    let (mut train, mut val) = (
        String::from("filepath,title\n"),
        String::from("path,label,caption\n"),
    );
    for class in ["cat", "dog", "fox"] {
        for i in 0..8 {
            let path = format!("{class}/{i}.png");
            match i < 6 {
                true => train.push_str(&format!("{path},\"{}, picture {i}\"\n", caption(class))),
                false => val.push_str(&format!("{path},{class},{}\n", caption(class))),
            }
        }
    }
    std::fs::write(data.join("train.csv"), train).unwrap();
    std::fs::write(data.join("val.csv"), val).unwrap();
    let q = |f: &str| format!("{:?}", data.join(f).display().to_string());
    let train_src = format!(
        "data.train={{kind=\"csv\", path={}, image_column=\"filepath\", caption_column=\"title\"}}",
        q("train.csv")
    );
    let val_src = format!(
        "{{kind=\"csv\", path={}, caption_column=\"caption\"}}",
        q("val.csv")
    );
    let tok = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model/tokenizer/tokenizer.json");
    let mut base: Vec<String> = train_args(tmp.path(), &data);
    base.extend(
        [
            train_src,
            "train.objective=\"contrastive\"".to_string(),
            "optim.frozen_towers=[]".into(),
            "train.epochs=8".into(),
            "train.checkpoints.metric=\"mean_recall\"".into(),
            format!("model.tokenizer={:?}", tok.display().to_string()),
            TEST_TEXT_TOWER.into(),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_string(), s]),
    );
    let mut args = base.clone();
    args.extend(["--set".into(), format!("data.val={val_src}")]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    let run_dir = tmp.path().join("smoke");
    let evals = eval_records(&run_dir);
    let recall =
        |e: &serde_json::Value, dir: &str, k: &str| e["val"]["retrieval"][dir][k].as_f64().unwrap();
    let (first, last) = (&evals[0], &evals[evals.len() - 1]);
    for e in &evals {
        for dir in ["image_to_text", "text_to_image"] {
            let (r1, r5, r10) = (
                recall(e, dir, "r1"),
                recall(e, dir, "r5"),
                recall(e, dir, "r10"),
            );
            assert!(0.0 <= r1 && r1 <= r5 && r5 <= r10 && r10 <= 1.0, "{e}");
        }
    }
    // The towers learned to pair the images with their captions (3 distinct
    // captions among 6 images: a tie with one's own counts for it).
    assert!(
        recall(first, "image_to_text", "r1") < 1.0 && recall(last, "image_to_text", "r1") == 1.0,
        "{first}\n{last}"
    );
    assert!(
        last["val"]["retrieval"]["mean_recall"].as_f64().unwrap()
            > first["val"]["retrieval"]["mean_recall"].as_f64().unwrap()
    );
    // `eval` of the run (its checkpoint with the best mean recall) on the same CSV.
    let best = evals
        .iter()
        .map(|e| e["val"]["retrieval"]["mean_recall"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(&run_dir)
        .args(["--data", &val_src]));
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got = report["retrieval"]["mean_recall"].as_f64().unwrap();
    assert!((got - best).abs() < 1e-9, "eval {got} vs best {best}");
    // An export: its tokenizer.json is needed, and then gives the same figures.
    let export = tmp.path().join("export");
    export_run(&run_dir, &export);
    let eval_export = || {
        run(bin()
            .args(["eval", "--model"])
            .arg(&export)
            .args(["--data", &val_src]))
    };
    let o = eval_export();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("retrieval needs the text tower's tokenizer.json"),
        "{}",
        stderr(&o)
    );
    std::fs::copy(&tok, export.join("tokenizer.json")).unwrap();
    let o = eval_export();
    assert!(o.status.success());
    let exported: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(exported["retrieval"], report["retrieval"]);
    assert_eq!(
        (
            &report["retrieval"]["images"],
            &report["retrieval"]["captions"]
        ),
        (&6.into(), &6.into())
    );
    // Each image in two rows (COCO's several captions per image; here the same
    // caption twice): one image with two captions, so the caption -> image
    // figures are the single-caption ones (one image per forward pass: the
    // embeddings do not depend on the batch).
    let val_text = std::fs::read_to_string(data.join("val.csv")).unwrap();
    let twice: String = val_text
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n{l}\n"))
        .collect();
    std::fs::write(
        data.join("twice.csv"),
        format!("path,label,caption\n{twice}"),
    )
    .unwrap();
    let retrieval_of = |csv: &str| {
        let o = run(bin()
            .args(["eval", "--batch-size", "1", "--model"])
            .arg(&run_dir)
            .args([
                "--data",
                &format!(
                    "{{kind=\"csv\", path={}, caption_column=\"caption\"}}",
                    q(csv)
                ),
            ]));
        assert!(o.status.success());
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["retrieval"].clone()
    };
    let (single, doubled) = (retrieval_of("val.csv"), retrieval_of("twice.csv"));
    assert_eq!(
        (&doubled["images"], &doubled["captions"]),
        (&6.into(), &12.into()),
        "{doubled}"
    );
    assert_eq!(doubled["text_to_image"], single["text_to_image"]);
    assert_eq!(
        doubled["image_to_text"]["r1"],
        single["image_to_text"]["r1"]
    );

    // The same pairs as `data.retrieval` beside labelled validation data without
    // captions (open_clip's --val-data beside a zero-shot set): the same figures.
    let mut split = base.clone();
    let labelled = format!("{{kind=\"csv\", path={}}}", q("val.csv"));
    split.extend([
        "--set".into(),
        format!("data.val={labelled}"),
        "--set".into(),
        format!("data.retrieval={val_src}"),
        "--set".into(),
        "run.overwrite=true".into(),
    ]);
    assert!(run(bin().args(&split)).status.success());
    let again = eval_records(&run_dir);
    assert_eq!(again.len(), evals.len());
    for (a, b) in evals.iter().zip(&again) {
        assert_eq!(a["val"]["retrieval"], b["val"]["retrieval"]);
        assert_eq!(a["val"]["accuracy"], b["val"]["accuracy"]);
    }

    // What image-caption data without labels cannot do.
    for (sets, expected) in [
        (vec![], "`data.val`: is required"),
        (
            vec!["train.objective=\"cross_entropy\""],
            "holds image-caption pairs without labels",
        ),
        (
            vec!["data.val={kind=\"image_folder\", path=\"DATA\"}"],
            "`train.checkpoints.metric`: \"mean_recall\" is image <-> text retrieval",
        ),
        (
            vec!["data.retrieval={kind=\"csv\", path=\"DATA/val.csv\"}"],
            "`data.retrieval`: has no captions",
        ),
        (
            vec![
                "data.val={kind=\"csv\", path=\"DATA/train.csv\", image_column=\"filepath\", \
                 caption_column=\"title\"}",
            ],
            "`data.val`: has no labels",
        ),
    ] {
        let mut a = if sets.is_empty() {
            base.clone()
        } else {
            args.clone()
        };
        for s in sets {
            a.extend([
                "--set".into(),
                s.replace("DATA", &data.display().to_string()),
            ]);
        }
        a.extend(["--set".into(), "run.overwrite=true".into()]);
        let o = run(bin().args(&a));
        assert_eq!(o.status.code(), Some(1), "{expected}");
        assert!(stderr(&o).contains(expected), "{expected}: {}", stderr(&o));
    }
}

/// `wise-ft --output` is a full export: transformers' Auto class and pipeline
/// load it (with our logits), it carries the zero-shot model's tokenizer, the
/// curve and its plot, and its card says what the weights are and what they
/// scored at the chosen alpha.
#[test]
fn wise_ft_output_is_an_export_transformers_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 6);
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model/tiny-a");
    let cfg = tmp.path().join("ft.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nname = \"ft\"\noutput_dir = {:?}\ndevice = \"cpu\"\n[model]\npretrained = {:?}\n\
             [model.head]\ninit = \"zero_shot\"\n[data]\ntrain = {{ kind = \"image_folder\", path = {:?} }}\n\
             val_fraction = 0.25\n[data.loader]\nbatch_size = 8\nthreads = 1\n[optim]\nlr = 1e-3\n\
             [train]\nepochs = 1\nprecision = \"fp32\"\n",
            tmp.path().display().to_string(),
            tiny.display().to_string(),
            data.display().to_string()
        ),
    )
    .unwrap();
    let o = run(bin().arg("--config").arg(&cfg).arg("--quiet"));
    assert!(o.status.success());
    let mix = tmp.path().join("mix");
    // An evaluation set (two of the classes, other images): every alpha is
    // measured on it too, and the paper's picture is drawn.
    let shifted = tmp.path().join("shifted");
    image_folder::make_folder(&shifted, &["cat", "dog"], 5);
    let o = run(bin()
        .args(["wise-ft", "--alphas", "0,0.5,1", "--zero-shot"])
        .arg(&tiny)
        .arg("--fine-tuned")
        .arg(tmp.path().join("ft"))
        .arg("--data")
        .arg(&data)
        .arg("--eval-set")
        .arg(format!("shifted={}", shifted.display()))
        .arg("--output")
        .arg(&mix));
    assert!(o.status.success(), "{}", stderr(&o));
    let sweep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "README.md",
        "wise_ft.json",
        "wise_ft.png",
        "wise_ft_robustness.png",
    ] {
        assert!(mix.join(f).is_file(), "{f} missing from the mix");
    }
    for p in sweep["points"].as_array().unwrap() {
        let a = p["eval_sets"]["shifted"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{sweep}");
    }
    let card = std::fs::read_to_string(mix.join("README.md")).unwrap();
    let alpha = sweep["best_alpha"].as_f64().unwrap();
    assert!(
        !card.contains("randomly initialised")
            && card.contains("WiSE-FT: the weights of the fine-tuned")
            && card.contains(&format!("at alpha {alpha:.2}"))
            && card.contains(&format!("      value: {}\n", sweep["best_accuracy"])),
        "{card}"
    );
    transformers_agrees_with_eval(&mix, &data, tmp.path(), true);
}

/// `--config full.toml` (the project's own example) works from any folder: a bare
/// name not in the current folder is taken from the repository's `configs/`,
/// saying so; a name found nowhere lists the configs that exist; a relative data
/// path that is missing says which folder it was read from.
#[test]
fn bare_config_names_are_found_in_configs_and_relative_paths_name_their_base() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 2);
    let o = run(bin()
        .current_dir(tmp.path())
        .env("RUST_LOG", "info")
        .args(["inspect", "--config", "smoke.toml", "--set"])
        .arg(train_source(&data)));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("--config smoke.toml: using ")
            && stderr(&o).contains("configs/smoke.toml (smoke.toml is not in the current folder)"),
        "{}",
        stderr(&o)
    );
    let o = run(bin()
        .current_dir(tmp.path())
        .args(["inspect", "--config", "fulll.toml"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("fulll.toml does not exist")
            && stderr(&o).contains("configs that exist: ")
            && stderr(&o).contains("configs/full.toml"),
        "{}",
        stderr(&o)
    );
    let o = run(bin()
        .current_dir(tmp.path())
        .args(["--config", "smoke", "--quiet"]));
    assert!(!o.status.success());
    let base = tmp.path().canonicalize().unwrap();
    assert!(
        stderr(&o).contains(&format!(
            "data/smoke/train does not exist (relative paths are read from the current folder, {})",
            base.display()
        )),
        "{}",
        stderr(&o)
    );
}

/// `--dry-run` prints what the run would do — the data after the split, its
/// length in steps, the global batch, the warmup and every group's LR — and
/// writes nothing.
#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let mut args = train_args(tmp.path(), &data);
    args.extend([
        "--set".into(),
        "train.grad_accum=2".into(),
        "--dry-run".into(),
    ]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    // 24 images, a quarter for validation; batches of 8 (the last one short):
    // 3 per epoch, 2 per optimizer step: 2 steps per epoch, 6 in 3 epochs, a
    // warmup of ceil(0.1 x 6) = 1.
    for want in [
        "data: 18 training and 6 validation images, 3 classes",
        "global batch: 16 images per optimizer step (batch_size 8 x 1 rank(s) x grad_accum 2)",
        "length: 2 optimizer steps per epoch, 3 epoch(s), 6 steps in all; warmup 1 steps",
        "memory per rank (estimate, ",
        "activations of a batch of 8 ",
        "head",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(
        !tmp.path().join("smoke").exists(),
        "the dry run created the run folder"
    );
    // A batch larger than the data makes a 1-step run, which the warmup cannot
    // fit: the error says how the length came about.
    let mut args = train_args(tmp.path(), &data);
    args.extend(
        [
            "--set",
            "data.loader.batch_size=64",
            "--set",
            "train.epochs=1",
            "--dry-run",
        ]
        .map(String::from),
    );
    let o = run(bin().args(&args));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("18 training images in global batches of 64")
            && stderr(&o).contains("the batch is larger than the data"),
        "{}",
        stderr(&o)
    );
}

/// `--quiet` prints one line on success (where the run is); `--log-format json`
/// makes every stderr line one JSON object — the step metrics, the
/// evaluations, the summary and errors (clap's too) included.
#[test]
fn quiet_prints_one_line_and_json_logs_are_json_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let o = run(bin().args(train_args(tmp.path(), &data)));
    assert!(o.status.success());
    let lines: Vec<String> = stderr(&o).lines().map(String::from).collect();
    assert_eq!(
        lines,
        [format!(
            "run folder: {}",
            tmp.path().join("smoke").display()
        )]
    );

    let mut args = train_args(tmp.path(), &data);
    args.retain(|a| a != "--quiet");
    args.extend([
        "--set".into(),
        "run.overwrite=true".into(),
        "--log-format".into(),
        "json".into(),
    ]);
    let o = bin().env_remove("RUST_LOG").args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let objects: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
        })
        .collect();
    let with = |message: &str| {
        objects
            .iter()
            .filter(|o| o["fields"]["message"] == message)
            .count()
    };
    // smoke.toml logs every step: 9 training images in batches of 8 make 2
    // steps per epoch, 6 in 3 epochs, with 3 evaluations.
    assert_eq!((with("step"), with("eval"), with("finished")), (6, 3, 1));
    let step = objects
        .iter()
        .find(|o| o["fields"]["message"] == "step")
        .unwrap();
    for key in ["epoch", "step", "loss", "lr", "grad_norm", "images_per_s"] {
        assert!(step["fields"].get(key).is_some(), "{key} missing: {step}");
    }
    assert!(
        objects
            .iter()
            .all(|o| o["level"].is_string() && o["timestamp"].is_string())
    );
    // Errors, ours and clap's, are JSON objects too.
    for bad in [vec!["--set", "optim.lr=-1"], vec!["--no-such-flag"]] {
        let o = bin()
            .args(["--log-format", "json", "--config"])
            .arg(smoke())
            .args(&bad)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let last: serde_json::Value =
            serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "ERROR", "{last}");
    }
}

/// A finished or early-stopped run resumed with a longer length continues (with
/// a warning that the schedule is recomputed); resumed unchanged, it says why
/// there is nothing to do.
#[test]
fn raising_the_length_on_resume_continues_a_finished_or_early_stopped_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let run_dir = tmp.path().join("smoke");
    let global_step = || {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
                .unwrap();
        s["global_step"].as_u64().unwrap()
    };
    let resume = |sets: &[&str]| {
        let mut c = bin();
        c.arg("--resume").arg(&run_dir).arg("--quiet");
        for s in sets {
            c.args(["--set", s]);
        }
        run(&mut c)
    };
    // 9 training images, batch 8: 2 steps per epoch, 6 in 3 epochs.
    let o = run(bin().args(train_args(tmp.path(), &data)));
    assert!(o.status.success());
    assert_eq!(global_step(), 6);
    let o = resume(&[]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("the run is complete (step 6 of 6)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(global_step(), 6);
    let o = resume(&["train.epochs=4"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("continues from step 6 to step 8"),
        "{}",
        stderr(&o)
    );
    assert_eq!(global_step(), 8);

    // Early stopping that never sees an improvement stops at the second
    // evaluation (step 4); more epochs let it go on, to its next stop.
    let mut args = train_args(tmp.path(), &data);
    args.extend([
        "--set".into(),
        "run.overwrite=true".into(),
        "--set".into(),
        "train.early_stopping={patience=1, min_delta=10.0}".into(),
    ]);
    let o = run(bin().args(&args));
    assert!(o.status.success());
    assert_eq!(global_step(), 4);
    let o = resume(&[]);
    assert!(
        stderr(&o).contains("the run stopped early at step 4"),
        "{}",
        stderr(&o)
    );
    assert_eq!(global_step(), 4);
    let o = resume(&["train.epochs=5"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("had stopped early at step 4"),
        "{}",
        stderr(&o)
    );
    assert_eq!(global_step(), 6);
    // The model comes from the checkpoint: a new architecture is refused, not
    // announced and ignored.
    let o = resume(&["model.architecture.vision.hidden_size=64"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the model's shape cannot change on resume")
            && stderr(&o).contains("model.architecture.vision.hidden_size: 32 -> 64"),
        "{}",
        stderr(&o)
    );
}

/// The one run of `experiment` at `tracking_uri` as MLflow's own client reads
/// it: how many runs, status, name, params, `train/loss` as `[step, value]`
/// pairs, the steps of `val/accuracy`, the artifacts.
fn mlflow_run(tracking_uri: &str, experiment: &str) -> serde_json::Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let o = Command::new(&python)
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .args([
            "-c",
            "import sys, json\n\
from mlflow.tracking import MlflowClient\n\
c = MlflowClient(tracking_uri=sys.argv[1])\n\
e = c.get_experiment_by_name(sys.argv[2])\n\
runs = c.search_runs([e.experiment_id])\n\
r = runs[0]\n\
print(json.dumps({'runs': len(runs), 'status': r.info.status, 'name': r.info.run_name,\n\
  'params': r.data.params, 'loss': [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, 'train/loss')],\n\
  'acc_steps': [m.step for m in c.get_metric_history(r.info.run_id, 'val/accuracy')],\n\
  'artifacts': sorted(a.path for a in c.list_artifacts(r.info.run_id))}))\n",
        ])
        .args([tracking_uri, experiment])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// What [`mlflow_run`] must say of the smoke run (18 training images in batches
/// of 8, a step line every step: 9 steps, an evaluation every 3): one finished
/// run, its config as params, each step once, the plots and summary.
fn mlflow_run_is_complete(r: &serde_json::Value) {
    assert_eq!(r["runs"], 1, "{r}");
    assert_eq!(r["status"], "FINISHED");
    assert_eq!(r["name"], "smoke");
    assert_eq!(r["params"]["optim.lr"], "0.003");
    assert_eq!(r["params"]["train.epochs"], "3");
    let steps: Vec<u64> = r["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=9).collect::<Vec<u64>>());
    assert_eq!(r["acc_steps"], serde_json::json!([3, 6, 9]));
    for a in ["accuracy.png", "config.resolved.toml", "summary.json"] {
        assert!(
            r["artifacts"].as_array().unwrap().iter().any(|x| x == a),
            "{a} not among {}",
            r["artifacts"]
        );
    }
}

/// MLflow's own client reads back what `train.report_to = ["mlflow"]` writes to a
/// file store: the run, its status, the resolved config as params, every step's
/// loss and every evaluation, the plots and summary as artifacts; a resume from
/// an earlier checkpoint continues the same run without duplicate steps.
#[test]
fn mlflow_reads_the_run_back_and_a_resume_adds_no_duplicate_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let store = tmp.path().join("mlruns");
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.report_to=[\"mlflow\"]".into()]);
    let with_store = |c: &mut Command| {
        c.env("MLFLOW_TRACKING_URI", format!("file:{}", store.display()))
            .env("MLFLOW_EXPERIMENT_NAME", "clip-test");
    };
    let mut c = bin();
    with_store(&mut c);
    let o = run(c.args(&args));
    assert!(o.status.success());
    let tracking = format!("file:{}", store.display());
    let read = || mlflow_run(&tracking, "clip-test");
    mlflow_run_is_complete(&read());
    // Back to the step-6 checkpoint: steps 7-9 are logged again, once.
    std::fs::remove_dir_all(tmp.path().join("smoke/checkpoints/step-00000009")).unwrap();
    let mut c = bin();
    with_store(&mut c);
    let o = run(c
        .arg("--resume")
        .arg(tmp.path().join("smoke"))
        .arg("--quiet"));
    assert!(o.status.success());
    mlflow_run_is_complete(&read());
    // A database is not written to directly: an error says how, before training.
    args.extend(["--set".into(), "run.name=\"db\"".into()]);
    let o = run(bin()
        .env("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
        .args(&args));
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("serve it with `mlflow server --backend-store-uri sqlite:///mlflow.db`"),
        "{}",
        stderr(&o)
    );
}

/// MLflow's own tracking server (its Flask app and REST handlers, SQLite
/// backend, artifact proxy: scripts/mlflow_test_server.py) gets the run through
/// the REST API, and MLflow's client reads it back from the server: status,
/// params, every step's loss and evaluation, the artifacts; a resume from an
/// earlier checkpoint continues the same run without duplicate steps; a server
/// that cannot be reached is an error before training, naming it.
#[test]
fn an_mlflow_tracking_server_gets_the_run_and_a_resume_adds_no_duplicate_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let mut server = Command::new(&python)
        .arg(root.join("scripts/mlflow_test_server.py"))
        .arg(tmp.path().join("server"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let _server = Kill(server);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
    let uri = format!("http://127.0.0.1:{port}");
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.report_to=[\"mlflow\"]".into()]);
    let train = |c: &mut Command| {
        let o = run(c
            .env("MLFLOW_TRACKING_URI", &uri)
            .env("MLFLOW_EXPERIMENT_NAME", "clip-server"));
        assert!(o.status.success(), "{}", stderr(&o));
    };
    train(bin().args(&args));
    let read = || mlflow_run(&uri, "clip-server");
    let r = read();
    mlflow_run_is_complete(&r);
    // The values are metrics.jsonl's.
    let jsonl = std::fs::read_to_string(tmp.path().join("smoke/metrics.jsonl")).unwrap();
    let first: Vec<f64> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step" && v["step"] == 1)
        .filter_map(|v| v["loss"].as_f64())
        .collect();
    assert!(
        (r["loss"][0][1].as_f64().unwrap() - first[0]).abs() < 1e-9,
        "{r} vs {first:?}"
    );
    // Back to the step-6 checkpoint: the server keeps steps 7-9, logged once.
    std::fs::remove_dir_all(tmp.path().join("smoke/checkpoints/step-00000009")).unwrap();
    train(
        bin()
            .arg("--resume")
            .arg(tmp.path().join("smoke"))
            .arg("--quiet"),
    );
    mlflow_run_is_complete(&read());
    // Nothing listens: an error naming the server, before training.
    drop(_server);
    args.extend(["--set".into(), "run.name=\"gone\"".into()]);
    let o = run(bin().env("MLFLOW_TRACKING_URI", &uri).args(&args));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "MLflow tracking server {uri}: experiments/get-by-name"
        )),
        "{}",
        stderr(&o)
    );
    let checkpoints = tmp.path().join("gone/checkpoints");
    assert!(
        !checkpoints.exists() || std::fs::read_dir(&checkpoints).unwrap().next().is_none(),
        "it trained"
    );
}

/// No command destroys an input or an earlier result: `convert` into the
/// folder of its own source shards, `export` into a checkpoint or onto another
/// model's files are refused (the inputs left byte for byte); an earlier export
/// is replaced whole only with `--overwrite` (no stale file left beside it).
#[test]
fn outputs_never_overwrite_inputs_or_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let shards = tmp.path().join("shards");
    let o = run(bin()
        .args(["convert", "--data"])
        .arg(&data)
        .arg("--output")
        .arg(&shards));
    assert!(o.status.success());
    let shard = shards.join("data-000000.tar");
    let before = std::fs::read(&shard).unwrap();
    let pattern = shards.join("*.tar");
    for (input, output, why) in [
        (&shard, shards.clone(), "it holds the input"),
        (&pattern, shards.join("again"), "it lies inside the input"),
    ] {
        let o = run(bin()
            .args(["convert", "--overwrite", "--data"])
            .arg(input)
            .arg("--output")
            .arg(&output));
        assert!(!o.status.success());
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&shard).unwrap(), before);

    let o = run(bin()
        .args(train_args(tmp.path(), &data))
        .args(["--set", "train.ema={}"]));
    assert!(o.status.success());
    let ckpt = tmp.path().join("smoke/checkpoints/step-00000006");
    let weights = ckpt.join("model/model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let export = |args: &[&str], out: &Path| {
        run(bin()
            .arg("export")
            .args(args)
            .arg("--checkpoint")
            .arg(&ckpt)
            .arg("--output")
            .arg(out))
    };
    let o = export(&["--ema", "--overwrite"], &ckpt.join("model"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refusing"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&weights).unwrap(), before);

    // A folder holding another model's files: refused, even with --overwrite.
    let out = tmp.path().join("export");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("tokenizer.json"), "{\"another\": \"model\"}").unwrap();
    let o = export(&["--overwrite"], &out);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not empty") && stderr(&o).contains("tokenizer.json"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&out).unwrap();
    assert!(export(&[], &out).status.success());
    std::fs::write(out.join("stale.json"), "{}").unwrap();
    let o = export(&[], &out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert!(export(&["--overwrite"], &out).status.success());
    assert!(out.join("config.json").is_file() && !out.join("stale.json").exists());
}

/// A mid-epoch checkpoint resumed after the epoch got shorter (a larger batch)
/// continues at the next epoch with a warning, instead of looping for ever.
#[test]
fn a_resume_into_a_shorter_epoch_continues_at_the_next_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 8);
    // 18 training images in batches of 8: 3 micro-batches an epoch; stop after 2.
    let mut args = train_args(tmp.path(), &data);
    args.extend([
        "--set".into(),
        "train.max_steps=2".into(),
        "--set".into(),
        "train.checkpoints.every_steps=1".into(),
    ]);
    assert!(run(bin().args(&args)).status.success());
    // Batches of 16: 2 micro-batches an epoch, both already behind the checkpoint.
    let mut child = bin()
        .arg("--resume")
        .arg(tmp.path().join("smoke"))
        .args([
            "--quiet",
            "--set",
            "data.loader.batch_size=16",
            "--set",
            "train.max_steps=4",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the resume did not end: it loops");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("an epoch now has 2 micro-batches") && err.contains("start of epoch 2"),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("smoke/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["global_step"], 4);
}

/// An image over `data.loader.max_image_pixels` stops the run naming the file,
/// its size and the key, before it is decoded.
#[test]
fn images_over_the_pixel_limit_name_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "data.loader.max_image_pixels=10".into()]);
    let o = run(bin().args(&args));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(".png")
            && err.contains("pixels, over the limit of 10")
            && err.contains("data.loader.max_image_pixels"),
        "{err}"
    );
}

/// A file name that is not UTF-8 is no crash: `predict --json` and `eval
/// --output` rows carry the lossy `path` and the raw `path_bytes` that trace
/// the file back.
#[test]
fn file_names_that_are_not_utf8_are_traced_back_in_json() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    assert!(
        run(bin().args(train_args(tmp.path(), &data)))
            .status
            .success()
    );
    let odd = data
        .join("cat")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    let first = std::fs::read_dir(data.join("cat"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&first, &odd).unwrap();
    let want: Vec<u64> = odd
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|&b| u64::from(b))
        .collect();
    let traced = |row: &serde_json::Value| {
        row["path_bytes"]
            .as_array()
            .is_some_and(|b| b.iter().map(|x| x.as_u64().unwrap()).collect::<Vec<_>>() == want)
    };
    let o = run(bin()
        .args(["predict", "--json", "--model"])
        .arg(tmp.path().join("smoke"))
        .arg(data.join("cat")));
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.iter().filter(|r| traced(r)).count(), 1, "{rows:?}");
    let preds = tmp.path().join("preds.jsonl");
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(tmp.path().join("smoke"))
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(&preds));
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.iter().filter(|r| traced(r)).count(), 1);
}

/// A resume on data that changed since the checkpoint (images added; the same
/// count relabelled) is refused naming what changed, and continues with
/// `--allow-data-change`, saying that the split was made again; unchanged data
/// resumes without a word about it.
#[test]
fn a_resume_on_changed_data_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let mut args = train_args(tmp.path(), &data);
    args.extend(["--set".into(), "train.max_steps=2".into()]);
    assert!(run(bin().args(&args)).status.success());
    let resume = |extra: &[&str], steps: usize| {
        run(bin()
            .arg("--resume")
            .arg(tmp.path().join("smoke"))
            .args(["--quiet", "--set", &format!("train.max_steps={steps}")])
            .args(extra))
    };
    let o = resume(&[], 3);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("data changed"), "{}", stderr(&o));
    // The same number of images, one of them moved to another class.
    std::fs::rename(data.join("cat/0.png"), data.join("dog/moved.png")).unwrap();
    let o = resume(&[], 4);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("the data changed since this checkpoint was written"),
        "{err}"
    );
    assert!(err.contains("are others (or relabelled)"), "{err}");
    assert!(err.contains("--allow-data-change"), "{err}");
    // Images added: the counts are named.
    image_folder::make_folder(&data, &["fox"], 7);
    let o = resume(&[], 4);
    assert!(
        stderr(&o).contains("training images: 9 then,"),
        "{}",
        stderr(&o)
    );
    let o = resume(&["--allow-data-change"], 4);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("continuing on changed data"), "{err}");
    assert!(err.contains("splits the new listing again"), "{err}");
    // The checkpoint now holds the new data: resuming again needs no flag.
    let o = resume(&[], 5);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A run whose folder is deleted (or moved away) while it trains stops at its
/// next checkpoint with an error naming the folder, instead of recreating a
/// folder without its run and ending with exit 0; a moved folder keeps its
/// checkpoints and resumes from where it went.
#[test]
fn a_run_whose_folder_is_deleted_or_moved_stops_with_an_error() {
    for moved in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let child = running(tmp.path());
        let run = tmp.path().join("smoke");
        let away = tmp.path().join("moved");
        std::fs::rename(&run, &away).unwrap();
        if !moved {
            // Deleted (again while the run may still write into it).
            while std::fs::remove_dir_all(&away).is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let (t0, mut child) = (Instant::now(), child);
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("the run went on in its deleted folder");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("the run folder was deleted, moved or replaced during the run")
                && err.contains(&run.display().to_string()),
            "{err}"
        );
        assert!(
            clip_train::latest_checkpoint(&run).is_err(),
            "a checkpoint was written into a recreated folder"
        );
        if moved {
            let o = run_cmd_resume(&away);
            assert!(o.status.success(), "{}", stderr(&o));
        }
    }
}

/// `train-cli --resume DIR`, ending at the next epoch.
fn run_cmd_resume(dir: &Path) -> Output {
    run(bin()
        .arg("--resume")
        .arg(dir)
        .args(["--quiet", "--set", "train.epochs=1"]))
}

/// Model soups: two runs of different seeds and a third model made to hurt (one
/// run's export with its head negated) give a uniform soup whose every weight
/// is the mean of the three, and a greedy soup that starts from the best and
/// leaves the third out (Algorithm 1); both are exports `eval` measures as
/// soup.json says; models of other classes are refused, naming the difference.
#[test]
fn soups_average_runs_and_the_greedy_soup_keeps_the_best_ingredient() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let shifted = tmp.path().join("shifted");
    image_folder::make_folder(&shifted, &["cat", "dog"], 5);
    let step = |seed: u64| {
        let out = tmp.path().join(format!("seed{seed}"));
        let mut args = train_args(&out, &data);
        args.extend(["--set".into(), format!("run.seed={seed}")]);
        args.extend(["--set".into(), eval_set("shifted", &shifted)]);
        assert!(run(bin().args(&args)).status.success());
        out.join("smoke/checkpoints/step-00000006")
    };
    let (a, b) = (step(1), step(2));
    // A third ingredient made to be rejected: a's export with its head negated
    // and scaled by 100 (it predicts the least likely class; any soup with it
    // is dominated by that head).
    let c = tmp.path().join("negated");
    export_run(&a, &c);
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let o = Command::new(&python)
        .args([
            "-c",
            "import sys\n\
from safetensors.numpy import load_file, save_file\n\
p = sys.argv[1] + '/model.safetensors'\n\
w = load_file(p)\n\
w.update({k: w[k] * -100.0 for k in ('classification_head.weight', 'classification_head.bias')})\n\
save_file(w, p, metadata={'format': 'pt'})\n",
        ])
        .arg(&c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("soup");
    let o = run(bin()
        .env("RUST_LOG", "info")
        .args(["soup", "--models"])
        .arg(&a)
        .arg(&b)
        .arg(&c)
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soup.json")).unwrap()).unwrap();
    let ingredients = report["ingredients"].as_array().unwrap();
    assert_eq!(ingredients.len(), 3);
    // Algorithm 1: the negated model is tried last (the lowest accuracy) and left
    // out (the soup's accuracy would drop); the uniform soup pays for it.
    assert_eq!(ingredients[2]["in_greedy"], false, "{report}");
    assert!(
        !report["greedy"]["ingredients"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(c.display().to_string())),
        "{report}"
    );
    assert!(
        stderr(&o).contains(&format!("soup: greedy: with {}", c.display()))
            && stderr(&o).contains("left out"),
        "{}",
        stderr(&o)
    );
    assert!(
        report["uniform"]["accuracy"].as_f64() < report["greedy"]["accuracy"].as_f64(),
        "{report}"
    );
    // The runs' evaluation sets, for every ingredient and soup.
    for figures in ingredients
        .iter()
        .chain([&report["uniform"], &report["greedy"]])
    {
        assert!(figures["eval_sets"]["shifted"].is_number(), "{report}");
    }
    assert_eq!(
        report["uniform"]["ingredients"].as_array().unwrap().len(),
        3
    );
    // The best: the highest accuracy, ties to the lower loss.
    let key = |x: &serde_json::Value| {
        (
            x["accuracy"].as_f64().unwrap(),
            -x["loss"].as_f64().unwrap(),
        )
    };
    let best = ingredients
        .iter()
        .max_by(|x, y| key(x).partial_cmp(&key(y)).unwrap())
        .unwrap();
    assert_eq!(
        report["greedy"]["ingredients"][0], best["model"],
        "{report}"
    );
    assert_eq!(best["in_greedy"], true, "{report}");
    assert!(
        report["greedy"]["accuracy"].as_f64().unwrap() >= best["accuracy"].as_f64().unwrap(),
        "{report}"
    );
    // The uniform soup's weights are the mean of the ingredients'.
    let read = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    let (wa, wb, wc, wu) = (
        read(&a.join("model")),
        read(&b.join("model")),
        read(&c),
        read(&out.join("uniform")),
    );
    let (ta, tb, tc, tu) = (
        safetensors::SafeTensors::deserialize(&wa).unwrap(),
        safetensors::SafeTensors::deserialize(&wb).unwrap(),
        safetensors::SafeTensors::deserialize(&wc).unwrap(),
        safetensors::SafeTensors::deserialize(&wu).unwrap(),
    );
    let floats = |t: &safetensors::tensor::TensorView| -> Vec<f32> {
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut compared = 0;
    for (name, u) in tu.tensors() {
        let (Ok(x), Ok(y), Ok(z)) = (ta.tensor(&name), tb.tensor(&name), tc.tensor(&name)) else {
            continue;
        };
        if u.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let (x, y, z) = (floats(&x), floats(&y), floats(&z));
        for (i, u) in floats(&u).iter().enumerate() {
            let mean = (x[i] + y[i] + z[i]) / 3.0;
            assert!(
                (u - mean).abs() <= 1e-5 * (1.0 + mean.abs()),
                "{name}: {u} vs {mean}"
            );
        }
        compared += 1;
    }
    assert!(compared > 20, "{compared} tensors compared");
    // Each soup is an export that `eval` measures as soup.json says.
    for soup in ["uniform", "greedy"] {
        let o = run(bin()
            .args(["eval", "--model"])
            .arg(out.join(soup))
            .arg("--data")
            .arg(&data));
        assert!(o.status.success(), "{}", stderr(&o));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(m["accuracy"], report[soup]["accuracy"], "{soup}");
    }
    // Another class list cannot go into the soup.
    let other = tmp.path().join("other");
    image_folder::make_folder(&other, &["ant", "bee", "cow"], 4);
    let o = run(bin().args(train_args(&tmp.path().join("o"), &other)));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(bin()
        .args(["soup", "--models"])
        .arg(&a)
        .arg(tmp.path().join("o/smoke"))
        .arg("--data")
        .arg(&data));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot go into a soup") && stderr(&o).contains("classes"),
        "{}",
        stderr(&o)
    );
}

/// A sweep trains every point of its grid in a folder of its own and tables
/// them; run again, it reuses finished points and resumes a killed one (no
/// summary, a checkpoint); `--soup` soups the points; a changed config is
/// refused naming the keys unless `--rerun`.
#[test]
fn a_sweep_trains_every_point_reuses_finished_ones_and_resumes_a_killed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let out = tmp.path().join("sweep");
    let shifted = tmp.path().join("shifted");
    image_folder::make_folder(&shifted, &["cat", "dog"], 5);
    let sets = eval_set("shifted", &shifted);
    let sweep = |extra: &[&str]| {
        run(bin()
            .args(["sweep", "--quiet", "--config"])
            .arg(smoke())
            .args(["--set", &train_source(&data), "--set", &sets])
            .args(["--grid", "train.epochs=1,2"])
            .arg("--output")
            .arg(&out)
            .args(extra))
    };
    let o = sweep(&["--soup", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["name"], "000-epochs=1");
    assert_eq!(points[1]["global_step"], 4, "{report}");
    for p in points {
        assert!(p["val_accuracy"].as_f64().is_some(), "{report}");
        assert!(p["eval_sets"]["shifted"].as_f64().is_some(), "{report}");
    }
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(
        md.contains("| 001-epochs=2")
            && md.contains("train.epochs")
            && md.contains("shifted accuracy"),
        "{md}"
    );
    let soup: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soup/soup.json")).unwrap())
            .unwrap();
    assert_eq!(soup["ingredients"].as_array().unwrap().len(), 2);
    // The runs have an evaluation set: the held-out vs shifted picture.
    assert!(out.join("soup/soup_robustness.png").is_file());
    // Again: the finished points are reused; a point killed after its checkpoint
    // (no summary) resumes.
    std::fs::remove_file(out.join("001-epochs=2/summary.json")).unwrap();
    let o = sweep(&[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains("000-epochs=1"),
        "a finished point trained again: {err}"
    );
    assert!(
        err.contains("sweep: resuming") && err.contains("001-epochs=2"),
        "{err}"
    );
    assert!(out.join("001-epochs=2/summary.json").is_file());
    // Another config for the same folder: refused, naming the key.
    let o = run(bin()
        .args(["sweep", "--quiet", "--config"])
        .arg(smoke())
        .args([
            "--set",
            &train_source(&data),
            "--set",
            &sets,
            "--set",
            "optim.lr=0.01",
        ])
        .args(["--grid", "train.epochs=1,2", "--output"])
        .arg(&out));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("optim.lr: 0.003 -> 0.01") && stderr(&o).contains("--rerun"),
        "{}",
        stderr(&o)
    );
}

/// `sweep --jobs 2` trains points side by side, each with its console in
/// `logs/<point>.log`; a failed point stops the sweep with an error naming its
/// run and log, after the running points finish (they are tabled); with one job
/// at a time, no point starts after a failure.
#[test]
fn a_sweep_runs_jobs_side_by_side_and_stops_starting_them_after_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    // One unreadable image: fatal with on_corrupt = "error", skipped with "skip".
    std::fs::write(data.join("cat/broken.png"), b"not a png").unwrap();
    let out = tmp.path().join("sweep");
    let sweep = |jobs: &str| {
        run(bin()
            .args(["sweep", "--config"])
            .arg(smoke())
            .args([
                "--set",
                &train_source(&data),
                "--set",
                "data.loader.max_corrupt_share=0.5",
            ])
            .args(["--grid", "data.loader.on_corrupt=\"error\",\"skip\""])
            .args(["--jobs", jobs, "--output"])
            .arg(&out))
    };
    let o = sweep("1");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("000-on_corrupt=_error_"),
        "{}",
        stderr(&o)
    );
    assert!(
        !out.join("001-on_corrupt=_skip_").exists(),
        "a point started after a failure"
    );
    let o = sweep("2");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let log = out.join("logs/000-on_corrupt=_error_.log");
    assert!(
        err.contains("000-on_corrupt=_error_") && err.contains(&log.display().to_string()),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("broken.png"),
        "the failed job's console is in its log"
    );
    let done = out.join("logs/001-on_corrupt=_skip_.log");
    assert!(std::fs::metadata(&done).unwrap().len() > 0);
    assert!(err.contains("sweep: finished"), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{report}");
    assert_eq!(points[0]["name"], "001-on_corrupt=_skip_", "{report}");
}

/// `train.checkpoints.metric = "eval_sets.NAME.accuracy"` selects the checkpoint
/// with the best accuracy on that set (here a set whose cat and dog images carry
/// each other's labels, so the set and `val` disagree); a set that is not in
/// `data.eval_sets` is refused naming the key and the sets there are.
#[test]
fn checkpoints_can_be_selected_by_an_eval_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    let swapped = tmp.path().join("swapped");
    image_folder::make_folder(&swapped, &["dog", "cat", "fox"], 4);
    let set = eval_set("swapped", &swapped);
    let mut args = train_args(tmp.path(), &data);
    args.extend([
        "--set".into(),
        set.clone(),
        "--set".into(),
        "train.checkpoints={metric=\"eval_sets.swapped.accuracy\", keep_last=1, keep_best=1}"
            .into(),
        "--set".into(),
        "train.epochs=4".into(),
    ]);
    let o = run(bin().args(&args));
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = tmp.path().join("smoke");
    let evals = eval_records(&run_dir);
    assert!(evals.len() >= 4, "{evals:?}");
    let on_set = |e: &serde_json::Value| {
        e["val"]["eval_sets"]["swapped"]["accuracy"]
            .as_f64()
            .unwrap()
    };
    // The first evaluation with the best accuracy on the set.
    let best = evals
        .iter()
        .fold(&evals[0], |b, e| if on_set(e) > on_set(b) { e } else { b });
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["best"]["metric"], "eval_sets.swapped.accuracy",
        "{summary}"
    );
    assert_eq!(summary["best"]["step"], best["step"], "{summary}");
    assert_eq!(
        summary["best"]["value"].as_f64(),
        Some(on_set(best)),
        "{summary}"
    );
    // The set disagrees with val: selecting on val would pick another evaluation.
    let by_val = evals.iter().fold(&evals[0], |b, e| {
        if e["val"]["accuracy"].as_f64() > b["val"]["accuracy"].as_f64() {
            e
        } else {
            b
        }
    });
    assert_ne!(by_val["step"], best["step"], "{evals:?}");
    // A set the config does not have.
    let mut args = train_args(&tmp.path().join("o"), &data);
    args.extend([
        "--set".into(),
        set,
        "--set".into(),
        "train.early_stopping={metric=\"eval_sets.sketch.loss\"}".into(),
    ]);
    let o = run(bin().args(&args));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("train.early_stopping.metric")
            && stderr(&o)
                .contains("\"sketch\", which data.eval_sets does not have (it has swapped)"),
        "{}",
        stderr(&o)
    );
}

/// `data.eval_sets`: every evaluation measures each set beside `val` (its
/// classes a subset, matched by name), in metrics.jsonl, summary.json, on the
/// console and in the export's card, with the figures `eval` gives for the same
/// checkpoint on that set.
#[test]
fn eval_sets_are_measured_at_every_evaluation_as_eval_measures_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4);
    // Another draw of two of the classes.
    let shifted = tmp.path().join("shifted");
    image_folder::make_folder(&shifted, &["cat", "dog"], 7);
    let mut args = train_args(tmp.path(), &data);
    args.retain(|a| a != "--quiet");
    args.extend(["--set".into(), eval_set("shifted", &shifted)]);
    let o = run(bin().args(&args));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("| shifted acc "), "{}", stderr(&o));
    let run_dir = tmp.path().join("smoke");
    let evals = eval_records(&run_dir);
    assert_eq!(evals.len(), 3);
    let last = &evals[2];
    let set = &last["val"]["eval_sets"]["shifted"];
    assert_eq!(set["images"], 14, "{last}");
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(run_dir.join(format!(
            "checkpoints/step-{:08}",
            last["step"].as_u64().unwrap()
        )))
        .arg("--data")
        .arg(&shifted));
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["accuracy"], set["accuracy"]);
    let (a, b) = (m["loss"].as_f64().unwrap(), set["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-6, "eval {a} vs the run's {b}");
    // Several named sets in one `eval`: one report per name, the same figures,
    // and each prediction row names its set.
    let checkpoint = run_dir.join(format!(
        "checkpoints/step-{:08}",
        last["step"].as_u64().unwrap()
    ));
    let predictions = tmp.path().join("predictions.jsonl");
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(&checkpoint)
        .arg("--data")
        .arg(format!("id={}", data.display()))
        .arg("--data")
        .arg(format!("shifted={}", shifted.display()))
        .arg("--output")
        .arg(&predictions));
    assert!(o.status.success(), "{}", stderr(&o));
    let both: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(both["shifted"]["accuracy"], set["accuracy"], "{both}");
    assert_eq!(both["shifted"]["images"], 14, "{both}");
    assert_eq!(both["id"]["images"], 12, "{both}");
    let rows = std::fs::read_to_string(&predictions).unwrap();
    let sets: Vec<String> = rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["set"].to_string())
        .collect();
    assert_eq!(sets.iter().filter(|s| *s == "\"id\"").count(), 12);
    assert_eq!(sets.iter().filter(|s| *s == "\"shifted\"").count(), 14);
    // Several sets need names.
    let o = run(bin()
        .args(["eval", "--model"])
        .arg(&checkpoint)
        .arg("--data")
        .arg(&data)
        .arg("--data")
        .arg(format!("shifted={}", shifted.display())));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("each needs a name"), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert!(summary["best_eval"]["val"]["eval_sets"]["shifted"]["accuracy"].is_number());
    let export = tmp.path().join("export");
    export_run(&run_dir, &export);
    let card = std::fs::read_to_string(export.join("README.md")).unwrap();
    assert!(card.contains("| eval set `shifted` |"), "{card}");
    // A set of classes the model does not know is refused, naming it.
    let other = tmp.path().join("other");
    image_folder::make_folder(&other, &["ant"], 2);
    let mut args = train_args(&tmp.path().join("o"), &data);
    args.extend(["--set".into(), eval_set("ants", &other)]);
    let o = run(bin().args(&args));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("data.eval_sets.ants") && stderr(&o).contains("\"ant\""),
        "{}",
        stderr(&o)
    );
}
