//! The method (class-map head, diversification block, GCE / CE loss, accuracy counts)
//! against its f64 twins, plus finite-difference checks of the twins (those need no GPU).

use finegrain::method::diversify::{
    average_scores, average_scores_backward, diversify_backward, diversify_forward, step_words,
    DiversifyBackward, DiversifyConfig, DiversifyForward,
};
use finegrain::method::head::{column_sum, head_backward, head_forward, HeadBackward, HeadForward};
use finegrain::method::loss::{
    effective_k, loss_eval, loss_forward_backward, LossEval, LossForwardBackward, LossKind,
    LossOptions, STATS,
};
use finegrain::reference::{diversify as rdiv, head as rhead, loss as rloss};
use finegrain::testing::{assert_close, check_grad, f64s, gpu, rng, uniform};
use finegrain::Gpu;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

// ---------------------------------------------------------------------------------------
// Head

fn head_case(g: &Gpu, n: usize, h: usize, w: usize, d: usize, c: usize) {
    let rows = n * h * w;
    let mut r = rng(&format!("head rows={rows} d={d} c={c}"));
    let feat = uniform(&mut r, rows * d, 1.0);
    let weight = uniform(&mut r, d * c, 1.0);
    let bias = uniform(&mut r, c, 1.0);
    let dmaps = uniform(&mut r, rows * c, 1.0);
    let t_feat = g.tensor("feat", &[n, h, w, d], &feat).unwrap();
    let t_weight = g.tensor("weight", &[d, c], &weight).unwrap();
    let t_bias = g.tensor("bias", &[c], &bias).unwrap();
    let t_maps = g.zeros("maps", &[n, h, w, c]).unwrap();
    let t_dmaps = g.tensor("dmaps", &[n, h, w, c], &dmaps).unwrap();
    let t_dfeat = g.zeros("dfeat", &[n, h, w, d]).unwrap();
    let t_dweight = g.zeros("dweight", &[d, c]).unwrap();
    let t_dbias = g.zeros("dbias", &[c]).unwrap();
    for t in [&t_maps, &t_dfeat, &t_dweight, &t_dbias] {
        g.fill(t, f32::NAN).unwrap();
    }
    let fwd = head_forward(
        g,
        &HeadForward {
            feat: &t_feat,
            weight: &t_weight,
            bias: &t_bias,
            maps: &t_maps,
        },
    )
    .unwrap();
    let bwd = head_backward(
        g,
        &HeadBackward {
            feat: &t_feat,
            weight: &t_weight,
            dmaps: &t_dmaps,
            dfeat: &t_dfeat,
            dweight: &t_dweight,
            dbias: &t_dbias,
            half: None,
            accumulate: false,
        },
    )
    .unwrap();
    let all: Vec<_> = fwd.iter().chain(bwd.iter()).collect();
    g.run(&all).unwrap();
    let (f, wt, dm) = (f64s(&feat), f64s(&weight), f64s(&dmaps));
    let want_maps = rhead::head_forward(rows, d, c, &f, &wt, &f64s(&bias));
    let (want_dfeat, want_dweight, want_dbias) = rhead::head_backward(rows, d, c, &f, &wt, &dm);
    let tol = |k: usize| 4e-6 * (k as f64).sqrt() + 1e-6;
    let name = format!("head n={n} {h}x{w} d={d} c={c}");
    assert_close(
        &format!("{name} maps"),
        &g.download(&t_maps).unwrap(),
        &want_maps,
        tol(d + 1),
        1e-5,
    );
    assert_close(
        &format!("{name} dfeat"),
        &g.download(&t_dfeat).unwrap(),
        &want_dfeat,
        tol(c),
        1e-5,
    );
    assert_close(
        &format!("{name} dweight"),
        &g.download(&t_dweight).unwrap(),
        &want_dweight,
        tol(rows),
        1e-5,
    );
    assert_close(
        &format!("{name} dbias"),
        &g.download(&t_dbias).unwrap(),
        &want_dbias,
        tol(rows),
        1e-5,
    );

    // Gradient accumulation: the same batch again with `accumulate` adds its dweight,
    // dbias into what the tensors hold (earlier micro-batches' sums: random here), one f32
    // addition each, and writes the same dfeat.
    let (dw1, db1, df1) = (
        g.download(&t_dweight).unwrap(),
        g.download(&t_dbias).unwrap(),
        g.download(&t_dfeat).unwrap(),
    );
    let (held_w, held_b) = (uniform(&mut r, d * c, 3.0), uniform(&mut r, c, 3.0));
    g.upload(&t_dweight, &held_w).unwrap();
    g.upload(&t_dbias, &held_b).unwrap();
    g.fill(&t_dfeat, f32::NAN).unwrap();
    let bwd = head_backward(
        g,
        &HeadBackward {
            feat: &t_feat,
            weight: &t_weight,
            dmaps: &t_dmaps,
            dfeat: &t_dfeat,
            dweight: &t_dweight,
            dbias: &t_dbias,
            half: None,
            accumulate: true,
        },
    )
    .unwrap();
    g.run(&bwd.iter().collect::<Vec<_>>()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let sum = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f32>>();
    assert_eq!(
        bits(&g.download(&t_dweight).unwrap()),
        bits(&sum(&held_w, &dw1)),
        "{name}: accumulated dweight"
    );
    assert_eq!(
        bits(&g.download(&t_dbias).unwrap()),
        bits(&sum(&held_b, &db1)),
        "{name}: accumulated dbias"
    );
    assert_eq!(
        bits(&g.download(&t_dfeat).unwrap()),
        bits(&df1),
        "{name}: dfeat of an accumulating launch"
    );
}

#[test]
fn head_forward_backward_match_twin() {
    let Some(g) = gpu() else { return };
    for &(n, h, w, d, c) in &[
        (1, 1, 1, 1, 1),
        (1, 3, 3, 13, 7),
        (5, 3, 5, 33, 13),
        (2, 7, 7, 67, 200),
    ] {
        head_case(g, n, h, w, d, c);
    }
}

#[test]
fn column_sum_matches_twin() {
    let Some(g) = gpu() else { return };
    let mut r = rng("column_sum");
    for &(rows, cols) in &[(1, 1), (37, 4), (300, 17), (5, 33)] {
        let src = uniform(&mut r, rows * cols, 1.0);
        let init = uniform(&mut r, cols, 1.0);
        let t_src = g.tensor("src", &[rows, cols], &src).unwrap();
        let t_dst = g.zeros("dst", &[cols]).unwrap();
        let want = rhead::column_sum(rows, cols, &f64s(&src));
        let tol = 4e-6 * (rows as f64).sqrt() + 1e-6;
        g.fill(&t_dst, f32::NAN).unwrap();
        g.run(&[&column_sum(g, &t_src, &t_dst, false).unwrap()])
            .unwrap();
        assert_close(
            &format!("column_sum {rows}x{cols}"),
            &g.download(&t_dst).unwrap(),
            &want,
            tol,
            1e-5,
        );
        g.upload(&t_dst, &init).unwrap();
        g.run(&[&column_sum(g, &t_src, &t_dst, true).unwrap()])
            .unwrap();
        let want_acc: Vec<f64> = want.iter().zip(&init).map(|(a, &b)| a + b as f64).collect();
        assert_close(
            &format!("column_sum acc {rows}x{cols}"),
            &g.download(&t_dst).unwrap(),
            &want_acc,
            tol,
            1e-5,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Diversification block

struct DbRun {
    mask: Vec<u32>,
    scores: Vec<f32>,
    dmaps: Vec<f32>,
}

/// Run the DB forward (and backward with `dscores`) on the GPU for each step.
#[allow(clippy::too_many_arguments)]
fn db_gpu(
    g: &Gpu,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    cfg: &DiversifyConfig,
    maps: &[f32],
    dscores: &[f32],
    steps: &[u64],
) -> Vec<DbRun> {
    let t_maps = g.tensor("maps", &[n, h, w, c], maps).unwrap();
    let t_step = g.zeros_u32("step", &[2]).unwrap();
    let t_mask = g.zeros_u32("mask", &[n, h, w, c]).unwrap();
    let t_scores = g.zeros("scores", &[n, c]).unwrap();
    let t_dscores = g.tensor("dscores", &[n, c], dscores).unwrap();
    let t_dmaps = g.zeros("dmaps", &[n, h, w, c]).unwrap();
    // Built once; only the step tensor changes between runs.
    let fwd = diversify_forward(
        g,
        cfg,
        &DiversifyForward {
            maps: &t_maps,
            step: &t_step,
            mask: &t_mask,
            scores: &t_scores,
        },
    )
    .unwrap();
    let bwd = diversify_backward(
        g,
        cfg,
        &DiversifyBackward {
            dscores: &t_dscores,
            mask: &t_mask,
            dmaps: &t_dmaps,
        },
    )
    .unwrap();
    steps
        .iter()
        .map(|&s| {
            g.upload(&t_step, &step_words(s)).unwrap();
            g.upload(&t_mask, &vec![7u32; n * h * w * c]).unwrap();
            g.fill(&t_scores, f32::NAN).unwrap();
            g.fill(&t_dmaps, f32::NAN).unwrap();
            g.run(&[&fwd[0], &bwd]).unwrap();
            DbRun {
                mask: g.download_u32(&t_mask).unwrap(),
                scores: g.download(&t_scores).unwrap(),
                dmaps: g.download(&t_dmaps).unwrap(),
            }
        })
        .collect()
}

#[track_caller]
fn assert_masks_equal(name: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{name}: mask length");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        bad.is_empty(),
        "{name}: {} of {} mask elements differ; first at {} (gpu {} twin {})",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

/// GPU masks, scores and dmaps against the twin for every step.
#[allow(clippy::too_many_arguments)]
fn db_check(
    g: &Gpu,
    name: &str,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    cfg: &DiversifyConfig,
    maps: &[f32],
    steps: &[u64],
) -> Vec<Vec<u32>> {
    let mut r = rng(name);
    let dscores = uniform(&mut r, n * c, 1.0);
    let runs = db_gpu(g, n, h, w, c, cfg, maps, &dscores, steps);
    let m = f64s(maps);
    let mut masks = Vec::new();
    for (run, &s) in runs.iter().zip(steps) {
        let (want_mask, want_scores) = rdiv::diversify_forward(n, h, w, c, cfg, s, &m);
        assert_masks_equal(&format!("{name} step {s}"), &run.mask, &want_mask);
        assert_close(
            &format!("{name} step {s} scores"),
            &run.scores,
            &want_scores,
            1e-6,
            1e-5,
        );
        let want_d =
            rdiv::diversify_backward(n, h, w, c, cfg.alpha as f64, &f64s(&dscores), &want_mask);
        assert_close(
            &format!("{name} step {s} dmaps"),
            &run.dmaps,
            &want_d,
            1e-8,
            1e-5,
        );
        masks.push(run.mask.clone());
    }
    masks
}

#[test]
fn diversify_forward_backward_match_twin() {
    let Some(g) = gpu() else { return };
    let steps = [0u64, 1, 2, 12345, (1u64 << 32) + 5];
    // 7x7 G=3 and 5x9 G=2 / G=4 have ragged patches; 14x14 G=3 too (14 = 4 * 3 + 2).
    for &(n, h, w, c, grid) in &[
        (5, 7, 7, 13, 3),
        (1, 14, 14, 33, 3),
        (2, 5, 9, 7, 2),
        (3, 5, 9, 3, 4),
        (1, 1, 1, 3, 3),
    ] {
        let name = format!("diversify n={n} {h}x{w} c={c} G={grid}");
        let mut r = rng(&name);
        let cfg = DiversifyConfig {
            p_peak: 0.5,
            p_patch: 0.4,
            grid,
            alpha: 0.1,
            seed: r.random(),
        };
        let maps = uniform(&mut r, n * h * w * c, 2.0);
        let masks = db_check(g, &name, n, h, w, c, &cfg, &maps, &steps);
        if n * h * w * c > 100 {
            assert!(
                masks.windows(2).all(|p| p[0] != p[1]),
                "{name}: masks did not change with the step"
            );
        }
    }
    // Same seed and step again: the same masks (a resumed run draws what it drew before).
    let cfg = DiversifyConfig {
        seed: 99,
        ..Default::default()
    };
    let mut r = rng("diversify repeat");
    let maps = uniform(&mut r, 2 * 7 * 7 * 5, 1.0);
    let a = db_gpu(g, 2, 7, 7, 5, &cfg, &maps, &[0.5; 10], &[3, 4, 3]);
    assert_eq!(a[0].mask, a[2].mask);
    assert_ne!(a[0].mask, a[1].mask);
    assert_eq!(a[0].scores, a[2].scores);
}

#[test]
fn diversify_ties_and_constant_maps() {
    let Some(g) = gpu() else { return };
    let (n, h, w, c) = (4, 7, 7, 37);
    let hw = h * w;
    let mut r = rng("diversify ties");
    let cfg = DiversifyConfig {
        seed: r.random(),
        ..Default::default()
    };
    let mut maps = uniform(&mut r, n * hw * c, 1.0);
    let at = |b: usize, p: usize, ch: usize| (b * hw + p) * c + ch;
    let mut peaks: Vec<Vec<usize>> = Vec::new();
    for b in 0..n {
        for ch in 0..c {
            let kind = (b * c + ch) % 3;
            let pos: Vec<usize> = match kind {
                0 => (0..hw)
                    .collect::<Vec<_>>()
                    .choose_multiple(&mut r, 3)
                    .cloned()
                    .collect(), // 3 tied maxima
                1 => (0..hw).collect(), // constant map: every location is a peak
                _ => vec![r.random_range(0..hw)],
            };
            if kind == 1 {
                for p in 0..hw {
                    maps[at(b, p, ch)] = 0.25;
                }
            } else {
                for &p in &pos {
                    maps[at(b, p, ch)] = 1.5;
                }
            }
            peaks.push(pos);
        }
    }
    let masks = db_check(g, "diversify ties", n, h, w, c, &cfg, &maps, &[0, 1, 2, 3]);
    let mut peak_suppressed = 0;
    for mask in &masks {
        for b in 0..n {
            for ch in 0..c {
                let pos = &peaks[b * c + ch];
                let v = mask[at(b, pos[0], ch)];
                assert!(
                    pos.iter().all(|&p| mask[at(b, p, ch)] == v),
                    "image {b} class {ch}: tied maxima masked differently"
                );
                peak_suppressed += v as usize;
            }
        }
    }
    let draws = masks.len() * n * c;
    assert!(
        peak_suppressed > 0 && peak_suppressed < draws,
        "peak draws all equal: {peak_suppressed}/{draws}"
    );
    // Integer-valued maps: ties everywhere.
    let maps: Vec<f32> = (0..n * hw * c)
        .map(|_| r.random_range(0..3) as f32)
        .collect();
    db_check(
        g,
        "diversify integer maps",
        n,
        h,
        w,
        c,
        &cfg,
        &maps,
        &[5, 6],
    );
}

#[test]
fn diversify_suppression_rates() {
    let Some(g) = gpu() else { return };
    // Count in the twin over many draws (the GPU masks equal the twin's: checked on the
    // first step here and in the tests above).
    let (n, h, w, c) = (16, 7, 7, 200);
    let hw = h * w;
    let mut r = rng("diversify rates");
    let cfg = DiversifyConfig {
        p_peak: 0.3,
        p_patch: 0.7,
        grid: 3,
        alpha: 0.1,
        seed: r.random(),
    };
    let maps = uniform(&mut r, n * hw * c, 1.0);
    let m = f64s(&maps);
    let steps: Vec<u64> = (0..4).map(|i| 1000 + i).collect();
    db_check(g, "diversify rates", n, h, w, c, &cfg, &maps, &steps[..1]);
    let (mut peak_n, mut peak_k, mut patch_n, mut patch_k) = (0usize, 0usize, 0usize, 0usize);
    let gr = cfg.grid as usize;
    let px = w.div_ceil(gr);
    for &s in &steps {
        let mask = rdiv::diversify_mask(n, h, w, c, &cfg, s, &m);
        for b in 0..n {
            for ch in 0..c {
                let at = |p: usize| (b * hw + p) * c + ch;
                let max = (0..hw).map(|p| m[at(p)]).fold(f64::NEG_INFINITY, f64::max);
                let mut patch_seen = vec![None; px * h.div_ceil(gr)];
                for p in 0..hw {
                    let v = mask[at(p)];
                    if m[at(p)] == max {
                        peak_n += 1;
                        peak_k += v as usize;
                    } else {
                        let q = (p / w / gr) * px + (p % w) / gr;
                        match patch_seen[q] {
                            None => patch_seen[q] = Some(v),
                            Some(u) => assert_eq!(u, v, "patch {q} masked unevenly"),
                        }
                    }
                }
                for v in patch_seen.into_iter().flatten() {
                    patch_n += 1;
                    patch_k += v as usize;
                }
            }
        }
    }
    for (what, k, total, p) in [
        ("peak", peak_k, peak_n, cfg.p_peak),
        ("patch", patch_k, patch_n, cfg.p_patch),
    ] {
        let p = p as f64;
        let rate = k as f64 / total as f64;
        let sd = (p * (1.0 - p) / total as f64).sqrt();
        eprintln!("{what}: {k}/{total} = {rate:.4} (p = {p}, sd {sd:.4})");
        assert!(
            (rate - p).abs() < 4.0 * sd,
            "{what} suppression rate {rate} vs p {p} (4 sd = {})",
            4.0 * sd
        );
    }
}

#[test]
fn average_scores_and_backward_match_twin() {
    let Some(g) = gpu() else { return };
    for &(n, h, w, c) in &[(1, 1, 1, 1), (5, 7, 7, 13), (2, 5, 9, 33), (1, 14, 14, 200)] {
        let name = format!("average_scores n={n} {h}x{w} c={c}");
        let mut r = rng(&name);
        let maps = uniform(&mut r, n * h * w * c, 2.0);
        let dscores = uniform(&mut r, n * c, 1.0);
        let t_maps = g.tensor("maps", &[n, h, w, c], &maps).unwrap();
        let t_scores = g.zeros("scores", &[n, c]).unwrap();
        let t_dscores = g.tensor("dscores", &[n, c], &dscores).unwrap();
        let t_dmaps = g.zeros("dmaps", &[n, h, w, c]).unwrap();
        g.fill(&t_scores, f32::NAN).unwrap();
        g.fill(&t_dmaps, f32::NAN).unwrap();
        let f = average_scores(g, &t_maps, &t_scores).unwrap();
        let b = average_scores_backward(g, &t_dscores, &t_dmaps).unwrap();
        g.run(&[&f, &b]).unwrap();
        let want = rdiv::average_scores(n, h, w, c, &f64s(&maps));
        assert_close(&name, &g.download(&t_scores).unwrap(), &want, 1e-6, 1e-5);
        let want_d = rdiv::average_scores_backward(n, h, w, c, &f64s(&dscores));
        assert_close(
            &format!("{name} backward"),
            &g.download(&t_dmaps).unwrap(),
            &want_d,
            1e-8,
            1e-5,
        );
    }
}

#[test]
fn diversify_config_defaults_and_validation() {
    let d = DiversifyConfig::default();
    assert_eq!((d.p_peak, d.p_patch, d.grid, d.alpha), (0.5, 0.5, 3, 0.1));
    d.validate().unwrap();
    assert!(DiversifyConfig { grid: 0, ..d }.validate().is_err());
    assert!(DiversifyConfig { p_peak: 1.5, ..d }.validate().is_err());
    assert!(DiversifyConfig {
        alpha: f32::NAN,
        ..d
    }
    .validate()
    .is_err());
    assert_eq!(DiversifyConfig::grid_for_map(14, 14), 3);
    assert_eq!(DiversifyConfig::grid_for_map(28, 28), 6);
    assert_eq!(DiversifyConfig::grid_for_map(7, 7), 2);
    assert_eq!(DiversifyConfig::grid_for_map(1, 9), 1);
    assert_eq!(DiversifyConfig::grid_for_map(14, 20), 3);
}

// ---------------------------------------------------------------------------------------
// Loss

struct LossRun {
    dscores: Vec<f32>,
    stats: Vec<f32>,
    eval_stats: Vec<f32>,
}

fn loss_gpu(
    g: &Gpu,
    n: usize,
    c: usize,
    kind: LossKind,
    scores: &[f32],
    labels: &[u32],
) -> LossRun {
    let t_s = g.tensor("scores", &[n, c], scores).unwrap();
    let t_l = g.tensor_u32("labels", &[n], labels).unwrap();
    let t_d = g.zeros("dscores", &[n, c]).unwrap();
    let t_st = g.zeros("stats", &[STATS]).unwrap();
    let t_ev = g.zeros("eval_stats", &[STATS]).unwrap();
    g.fill(&t_d, f32::NAN).unwrap();
    g.fill(&t_st, f32::NAN).unwrap();
    g.fill(&t_ev, f32::NAN).unwrap();
    // The per-image scratch given by the caller, as a network does (loss_eval below makes
    // its own).
    let t_pi = g.zeros("per_image", &[n, STATS]).unwrap();
    g.fill(&t_pi, f32::NAN).unwrap();
    let o = LossOptions::new(kind);
    let fb = loss_forward_backward(
        g,
        &o,
        &LossForwardBackward {
            scores: &t_s,
            labels: &t_l,
            dscores: &t_d,
            stats: &t_st,
            per_image: Some(&t_pi),
        },
    )
    .unwrap();
    let ev = loss_eval(
        g,
        &o,
        &LossEval {
            scores: &t_s,
            labels: &t_l,
            stats: &t_ev,
        },
    )
    .unwrap();
    let all: Vec<_> = fb.iter().chain(ev.iter()).collect();
    g.run(&all).unwrap();
    LossRun {
        dscores: g.download(&t_d).unwrap(),
        stats: g.download(&t_st).unwrap(),
        eval_stats: g.download(&t_ev).unwrap(),
    }
}

/// GPU loss against the twin: gradient close, exactly zero where the twin's is (outside
/// {y} U J'), accuracy counts exact, loss sum close.
#[allow(clippy::too_many_arguments)]
fn loss_check(
    g: &Gpu,
    name: &str,
    n: usize,
    c: usize,
    kind: LossKind,
    scores: &[f32],
    labels: &[u32],
    loss_rtol: f64,
) -> LossRun {
    let run = loss_gpu(g, n, c, kind, scores, labels);
    let want = rloss::loss_forward_backward(n, c, kind, &f64s(scores), labels);
    assert_close(
        &format!("{name} dscores"),
        &run.dscores,
        &want.dscores,
        1e-7,
        1e-4,
    );
    for (i, &got) in run.dscores.iter().enumerate() {
        if !want.in_set[i] {
            assert!(
                got == 0.0,
                "{name}: dscores[{i}] = {got:e}, want exactly 0 (outside the GCE set)"
            );
        }
    }
    let ws = want.stats();
    for stats in [&run.stats, &run.eval_stats] {
        assert_eq!(
            &stats[1..],
            &[ws[1] as f32, ws[2] as f32, ws[3] as f32],
            "{name}: top1/top5/non-finite counts"
        );
        assert_close(
            &format!("{name} loss sum"),
            &stats[..1],
            &ws[..1],
            1e-5 * n as f64,
            loss_rtol,
        );
    }
    run
}

fn labels_for(r: &mut impl Rng, n: usize, c: usize) -> Vec<u32> {
    (0..n).map(|_| r.random_range(0..c as u32)).collect()
}

#[test]
fn loss_matches_twin() {
    let Some(g) = gpu() else { return };
    for &c in &[1usize, 2, 7, 33, 200, 300] {
        for &n in &[1usize, 5] {
            let name = format!("loss n={n} c={c}");
            let mut r = rng(&name);
            let scores = uniform(&mut r, n * c, 4.0);
            let labels = labels_for(&mut r, n, c);
            for kind in [
                LossKind::CrossEntropy,
                LossKind::Gce { k: 1 },
                LossKind::Gce { k: 3 },
                LossKind::Gce { k: 15 },
                LossKind::Gce { k: 1000 },
            ] {
                loss_check(
                    g,
                    &format!("{name} {kind:?}"),
                    n,
                    c,
                    kind,
                    &scores,
                    &labels,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn gce_with_all_classes_equals_cross_entropy() {
    let Some(g) = gpu() else { return };
    for &c in &[2usize, 13, 200] {
        let n = 5;
        let mut r = rng(&format!("gce=ce c={c}"));
        let scores = uniform(&mut r, n * c, 4.0);
        let labels = labels_for(&mut r, n, c);
        let s = f64s(&scores);
        // Twins: the subset form with J' = all other classes equals the full softmax.
        let ce = rloss::loss_forward_backward(n, c, LossKind::CrossEntropy, &s, &labels);
        let gce =
            rloss::loss_forward_backward(n, c, LossKind::Gce { k: c as u32 - 1 }, &s, &labels);
        for (a, b) in ce.loss.iter().zip(&gce.loss) {
            assert!((a - b).abs() < 1e-12, "twin CE {a} vs GCE {b}");
        }
        for (a, b) in ce.dscores.iter().zip(&gce.dscores) {
            assert!((a - b).abs() < 1e-12, "twin CE grad {a} vs GCE {b}");
        }
        // GPU GCE with k = C - 1 against the twin's cross-entropy.
        let run = loss_gpu(g, n, c, LossKind::Gce { k: c as u32 - 1 }, &scores, &labels);
        assert_close(
            "gpu gce(k=C-1) vs twin CE dscores",
            &run.dscores,
            &ce.dscores,
            1e-7,
            1e-4,
        );
        assert_close(
            "gpu gce(k=C-1) vs twin CE loss",
            &run.stats[..1],
            &ce.stats()[..1],
            1e-5,
            1e-5,
        );
        // And a genuinely smaller set boosts the confusable negatives: p'_j >= p_j.
        let k3 = rloss::loss_forward_backward(n, c, LossKind::Gce { k: 1 }, &s, &labels);
        for i in 0..n * c {
            if k3.dscores[i] > 0.0 {
                assert!(k3.dscores[i] >= ce.dscores[i] - 1e-15);
            }
        }
    }
}

#[test]
fn loss_ties_large_scores_and_bad_inputs() {
    let Some(g) = gpu() else { return };
    // Integer scores: ties everywhere, including at the k-th place and with the label.
    let (n, c) = (8, 40);
    let mut r = rng("loss ties");
    let scores: Vec<f32> = (0..n * c).map(|_| r.random_range(0..4) as f32).collect();
    let labels = labels_for(&mut r, n, c);
    for kind in [
        LossKind::CrossEntropy,
        LossKind::Gce { k: 5 },
        LossKind::Gce { k: 15 },
    ] {
        loss_check(
            g,
            &format!("loss ties {kind:?}"),
            n,
            c,
            kind,
            &scores,
            &labels,
            1e-5,
        );
    }
    // |s| ~ 1e4: no NaN or infinity anywhere.
    for &c in &[2usize, 200] {
        let n = 5;
        let scores: Vec<f32> = uniform(&mut r, n * c, 1.0)
            .iter()
            .map(|v| v * 1e4)
            .collect();
        let labels = labels_for(&mut r, n, c);
        for kind in [LossKind::CrossEntropy, LossKind::Gce { k: 15 }] {
            let run = loss_check(
                g,
                &format!("loss large c={c} {kind:?}"),
                n,
                c,
                kind,
                &scores,
                &labels,
                1e-5,
            );
            assert!(
                run.dscores.iter().chain(&run.stats).all(|v| v.is_finite()),
                "non-finite output at |s| ~ 1e4"
            );
            assert_eq!(run.stats[3], 0.0);
        }
    }
    // A NaN score and an out-of-range label are counted (and the label gets no gradient).
    let (n, c) = (4, 6);
    let mut scores = uniform(&mut r, n * c, 1.0);
    scores[c + 2] = f32::NAN;
    let labels = vec![0, 1, 9, 3];
    let run = loss_gpu(g, n, c, LossKind::Gce { k: 2 }, &scores, &labels);
    assert_eq!(run.stats[3], 2.0, "non-finite count {:?}", run.stats);
    assert!(run.dscores[2 * c..3 * c].iter().all(|&v| v == 0.0));
    let want = rloss::loss_forward_backward(n, c, LossKind::Gce { k: 2 }, &f64s(&scores), &labels);
    assert_eq!(want.stats()[3], 2.0);
}

#[test]
fn loss_stats_accumulate_over_batches() {
    let Some(g) = gpu() else { return };
    let (n, c) = (5, 33);
    let kind = LossKind::Gce { k: 15 };
    let mut r = rng("loss accumulate");
    let t_st = g.zeros("stats", &[STATS]).unwrap();
    let mut want = [0.0f64; 4];
    for batch in 0..3 {
        let scores = uniform(&mut r, n * c, 3.0);
        let labels = labels_for(&mut r, n, c);
        let t_s = g.tensor("scores", &[n, c], &scores).unwrap();
        let t_l = g.tensor_u32("labels", &[n], &labels).unwrap();
        if batch == 0 {
            g.fill(&t_st, f32::NAN).unwrap(); // overwritten by the first batch
        }
        let o = LossOptions {
            kind,
            accumulate: batch > 0,
        };
        let t = LossEval {
            scores: &t_s,
            labels: &t_l,
            stats: &t_st,
        };
        let d = loss_eval(g, &o, &t).unwrap();
        g.run(&d.iter().collect::<Vec<_>>()).unwrap();
        let st = rloss::loss_forward_backward(n, c, kind, &f64s(&scores), &labels).stats();
        for i in 0..4 {
            want[i] += st[i];
        }
    }
    let got = g.download(&t_st).unwrap();
    assert_eq!(&got[1..], &[want[1] as f32, want[2] as f32, want[3] as f32]);
    assert_close("accumulated loss sum", &got[..1], &want[..1], 1e-4, 1e-5);
}

#[test]
fn effective_k_clamps() {
    assert_eq!(effective_k(15, 200), (15, false));
    assert_eq!(effective_k(199, 200), (199, false));
    assert_eq!(effective_k(200, 200), (199, true));
    assert_eq!(effective_k(15, 10), (9, true));
    assert_eq!(effective_k(3, 1), (0, true));
}

// ---------------------------------------------------------------------------------------
// Twins: central finite differences (no GPU needed)

#[test]
fn twin_loss_gradients_finite_differences() {
    let mut r = rng("twin loss fd");
    let (n, c) = (3, 12);
    // Scores at least 0.17 apart, so the top-k set cannot change within the FD step.
    let mut scores = Vec::new();
    for _ in 0..n {
        let mut v: Vec<f64> = (0..c)
            .map(|i| i as f64 * 0.37 + r.random_range(0.0..0.2))
            .collect();
        v.shuffle(&mut r);
        scores.extend(v);
    }
    let labels: Vec<u32> = (0..n).map(|_| r.random_range(0..c as u32)).collect();
    for kind in [
        LossKind::CrossEntropy,
        LossKind::Gce { k: 1 },
        LossKind::Gce { k: 4 },
    ] {
        let analytic = rloss::loss_forward_backward(n, c, kind, &scores, &labels).dscores;
        let sets: Vec<Vec<usize>> = (0..n)
            .map(|b| {
                let k = match kind {
                    LossKind::CrossEntropy => c - 1,
                    LossKind::Gce { k } => k as usize,
                };
                rloss::gce_set(&scores[b * c..(b + 1) * c], labels[b] as usize, k)
            })
            .collect();
        // The batch-mean loss with each image's set held fixed.
        let mut f = |x: &[f64]| {
            (0..n)
                .map(|b| {
                    rloss::softmax_subset_loss(&x[b * c..(b + 1) * c], labels[b] as usize, &sets[b])
                        .0
                })
                .sum::<f64>()
                / n as f64
        };
        check_grad(
            &format!("twin {kind:?}"),
            &mut f,
            &scores,
            &analytic,
            64,
            &mut r,
        );
    }
    // The CE twin's own formula too (full log-sum-exp, independent of the subset form).
    let y = labels[0] as usize;
    let row = &scores[..c];
    let (_, g) = rloss::cross_entropy(row, y);
    let mut f = |x: &[f64]| rloss::cross_entropy(x, y).0;
    check_grad("twin cross_entropy", &mut f, row, &g, 64, &mut r);
}

#[test]
fn twin_diversify_backward_finite_differences() {
    let mut r = rng("twin diversify fd");
    let (n, h, w, c) = (2, 5, 4, 3);
    let cfg = DiversifyConfig {
        seed: 7,
        ..Default::default()
    };
    let maps = f64s(&uniform(&mut r, n * h * w * c, 1.0));
    let weights = f64s(&uniform(&mut r, n * c, 1.0));
    let mask = rdiv::diversify_mask(n, h, w, c, &cfg, 3, &maps);
    let alpha = cfg.alpha as f64;
    // L = sum_bc weights * s_bc with the mask held fixed; dL/ds = weights.
    let analytic = rdiv::diversify_backward(n, h, w, c, alpha, &weights, &mask);
    let mut f = |x: &[f64]| {
        rdiv::masked_scores(n, h, w, c, alpha, x, &mask)
            .iter()
            .zip(&weights)
            .map(|(s, w)| s * w)
            .sum::<f64>()
    };
    check_grad(
        "twin diversify_backward",
        &mut f,
        &maps,
        &analytic,
        200,
        &mut r,
    );
    let analytic = rdiv::average_scores_backward(n, h, w, c, &weights);
    let mut f = |x: &[f64]| {
        rdiv::average_scores(n, h, w, c, x)
            .iter()
            .zip(&weights)
            .map(|(s, w)| s * w)
            .sum::<f64>()
    };
    check_grad(
        "twin average_scores_backward",
        &mut f,
        &maps,
        &analytic,
        200,
        &mut r,
    );
}

#[test]
fn twin_head_backward_finite_differences() {
    let mut r = rng("twin head fd");
    let (rows, d, c) = (7, 5, 3);
    let feat = f64s(&uniform(&mut r, rows * d, 1.0));
    let weight = f64s(&uniform(&mut r, d * c, 1.0));
    let bias = f64s(&uniform(&mut r, c, 1.0));
    let gout = f64s(&uniform(&mut r, rows * c, 1.0));
    let (dfeat, dweight, dbias) = rhead::head_backward(rows, d, c, &feat, &weight, &gout);
    let dot = |m: Vec<f64>| m.iter().zip(&gout).map(|(a, b)| a * b).sum::<f64>();
    check_grad(
        "twin head dfeat",
        &mut |x: &[f64]| dot(rhead::head_forward(rows, d, c, x, &weight, &bias)),
        &feat,
        &dfeat,
        64,
        &mut r,
    );
    check_grad(
        "twin head dweight",
        &mut |x: &[f64]| dot(rhead::head_forward(rows, d, c, &feat, x, &bias)),
        &weight,
        &dweight,
        64,
        &mut r,
    );
    check_grad(
        "twin head dbias",
        &mut |x: &[f64]| dot(rhead::head_forward(rows, d, c, &feat, &weight, x)),
        &bias,
        &dbias,
        64,
        &mut r,
    );
}
