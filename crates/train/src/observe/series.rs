//! The scalar series trackers get (TensorBoard, MLflow): the same names and
//! values from the same events.

use crate::eval::EvalReport;
use crate::observe::Event;

fn eval_scalars(prefix: &str, r: &EvalReport) -> Vec<(String, f64)> {
    let mut v = vec![
        (format!("{prefix}/loss"), r.loss),
        (format!("{prefix}/accuracy"), r.accuracy),
        (format!("{prefix}/top5"), r.top5),
        (format!("{prefix}/macro_f1"), r.macro_f1),
    ];
    if let Some(t) = &r.retrieval {
        for (dir, at) in [
            ("image_to_text", t.image_to_text),
            ("text_to_image", t.text_to_image),
        ] {
            for (k, x) in [
                ("r1", at.r1),
                ("r5", at.r5),
                ("r10", at.r10),
                ("mean_rank", at.mean_rank),
                ("median_rank", at.median_rank),
            ] {
                v.push((format!("{prefix}/{dir}_{k}"), x));
            }
        }
        v.push((format!("{prefix}/mean_recall"), t.mean_recall));
    }
    // `eval_sets/NAME/accuracy` (the EMA's: `eval_sets_ema/NAME/...`).
    let sets = prefix.replacen("val", "eval_sets", 1);
    for (name, set) in &r.eval_sets {
        v.extend(eval_scalars(&format!("{sets}/{name}"), set));
    }
    v
}

/// The step and named values `event` adds to the series: a step's figures every
/// `log_every` steps (and the first), an evaluation's (its EMA's too).
pub(crate) fn scalars(event: &Event, log_every: u64) -> Option<(u64, Vec<(String, f64)>)> {
    match event {
        Event::Step(m) if m.step % log_every.max(1) == 0 || m.step == 1 => {
            let mut v = vec![
                ("train/loss".to_string(), m.loss),
                ("train/lr".into(), m.lr),
                ("train/grad_norm".into(), m.grad_norm),
                ("train/images_per_s".into(), m.images_per_s),
                ("train/epoch".into(), m.epoch as f64),
            ];
            if let Some(s) = m.loss_scale {
                v.push(("train/loss_scale".into(), s));
            }
            Some((m.step, v))
        }
        Event::Eval(r) => {
            let mut v = eval_scalars("val", &r.val);
            if let Some(e) = &r.ema {
                v.extend(eval_scalars("val_ema", e));
            }
            if let Some(l) = r.train_loss {
                v.push(("train/loss_since_eval".into(), l));
            }
            Some((r.step, v))
        }
        _ => None,
    }
}
