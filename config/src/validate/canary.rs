//! Canary plan checks: the plan must name a model, two of its versions and a rule it can move.

use super::context::Ctx;

pub(super) fn check(cx: &mut Ctx<'_>) {
    let cfg = cx.cfg;
    cx.unique(
        "canary plan",
        cfg.canaries
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("canaries[{i}].name"), c.name.as_str())),
    );
    for (i, c) in cfg.canaries.iter().enumerate() {
        let at = format!("canaries[{i}]");
        cx.name(format!("{at}.name"), "canary plan name", &c.name);
        let Some(m) = cfg.models.iter().find(|m| m.name == c.model) else {
            cx.err(format!("{at}.model"), format!("unknown model `{}`", c.model));
            continue;
        };
        for (field, v) in [("stable", &c.stable), ("canary", &c.canary)] {
            if !m.versions.iter().any(|x| &x.name == v) {
                cx.err(
                    format!("{at}.{field}"),
                    format!("unknown version `{v}` of model `{}`", m.name),
                );
            }
        }
        if c.stable == c.canary {
            cx.err(format!("{at}.canary"), "the canary must differ from the stable version");
        }
        let route = crate::feed::canary_rule(m, c.route.as_deref()).map(|r| &m.routes[r]);
        match route {
            None => cx.err(
                format!("{at}.route"),
                match &c.route {
                    Some(n) => format!("model `{}` has no rule named `{n}`", m.name),
                    None => format!("model `{}` has no rule without `match` for the plan to move", m.name),
                },
            ),
            Some(r) => {
                let in_split = |v: &str| r.split.iter().any(|w| w.version == v);
                let ok =
                    (in_split(&c.stable) && in_split(&c.canary)) || r.version.as_deref() == Some(c.stable.as_str());
                if !ok {
                    cx.err(
                        format!("{at}.route"),
                        format!(
                            "the rule must split between `{}` and `{}`, or send everything to `{}`",
                            c.stable, c.canary, c.stable
                        ),
                    );
                }
            }
        }
        if c.steps.is_empty() {
            cx.err(format!("{at}.steps"), "a plan needs at least one step");
        }
        let mut last = 0;
        for (s, step) in c.steps.iter().enumerate() {
            if step.weight > 100 {
                cx.err(
                    format!("{at}.steps[{s}].weight"),
                    format!("{} is not a percentage between 0 and 100", step.weight),
                );
            } else if step.weight < last {
                cx.err(
                    format!("{at}.steps[{s}].weight"),
                    format!(
                        "{} is below the previous step's {last}; steps only move forward",
                        step.weight
                    ),
                );
            }
            last = last.max(step.weight);
        }
        let a = &c.analysis;
        if !(0.0..=1.0).contains(&a.success_rate) {
            cx.err(
                format!("{at}.analysis.success_rate"),
                format!("{} is not a ratio between 0 and 1", a.success_rate),
            );
        }
        if a.window.get().is_zero() || a.interval.get().is_zero() {
            cx.err(format!("{at}.analysis"), "interval and window must be longer than 0s");
        }
    }
}
