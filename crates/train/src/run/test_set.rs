//! A run's test set (`data.test`): read before training (a wrong path fails
//! early) and evaluated once, with the checkpoint validation selected.

use std::path::Path;

use clip_data::SourceConfig;
use tch::nn;

use crate::config::RunConfig;
use crate::device::Placement;
use crate::error::Result;
use crate::eval::EvalReport;
use crate::observe::plots::Marks;
use crate::report::write_json;
use crate::run::checkpoint::{TEST_FILE, TestResult, measured};
use crate::run::locate::{classifier_dir, eval_pipeline_for, load_classifier_from};

/// The test source `src` (`data.test`), labelled with `classes` (matched by
/// name: another order or a subset is fine, a class not among them an error).
pub fn test_set(src: &SourceConfig, classes: &[String]) -> Result<clip_data::Dataset> {
    Ok(clip_data::Dataset::load(src, "data.test")?.with_classes(classes, "data.test")?)
}

/// Evaluates the run in `run_dir` once on `cfg.data.test` with the checkpoint its
/// validation selected (else the latest), on the run's device and precision, and
/// writes `<run>/test.json`; `None` without a test source. The test set's
/// classes are matched to the model's by name.
pub fn evaluate_test(run_dir: &Path, cfg: &RunConfig) -> Result<Option<EvalReport>> {
    let Some(src) = &cfg.data.test else {
        return Ok(None);
    };
    let place = Placement::of_run(cfg)?;
    let vs = nn::VarStore::new(place.device);
    let dir = classifier_dir(run_dir)?;
    let model = load_classifier_from(&vs, &dir, false)?;
    let ds = test_set(src, model.class_names())?;
    let size = model.clip.config().vision_config.image_size as usize;
    let loader = crate::assembly::eval_loader(cfg, ds, eval_pipeline_for(&dir, size)?)?;
    let report =
        crate::eval::evaluate(
            &model,
            &loader,
            place.precision,
            place.device,
            |_, _| Ok(()),
        )?;
    let record = TestResult {
        checkpoint: dir.parent().unwrap_or(&dir).to_path_buf(),
        test: report,
    };
    write_json(&run_dir.join(TEST_FILE), &record)?;
    // The plots mark the test result at its checkpoint and draw its confusion.
    if let Some(step) = measured(&dir).map(|m| m.step) {
        crate::observe::plots::redraw(
            run_dir,
            &Marks {
                selected_step: Some(step),
                test: Some((step, record.test.clone())),
            },
        )?;
    }
    Ok(Some(record.test))
}
