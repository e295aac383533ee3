//! HAProxy's configuration from any listener document and any names: whatever was accepted,
//! every line rendered is one of the shapes Capstan writes, so nothing a user wrote can add a
//! directive (a newline, a `;` or a `#` in a name or address would).

use capstan_core::Listener;
use capstan_fuzz::{config, corpus, inputs, json_mutations, json_values, vocabulary};
use capstan_registrar::haproxy::{Layout, render};
use proptest::prelude::*;
use regex::Regex;

/// The lines `render` may write (the global and defaults sections are fixed text).
fn shapes() -> Vec<Regex> {
    [
        r"^(global|defaults)$",
        r"^    (stats|timeout|hard-stop-after|mode|option|retries|retry-on|http-request return) [ -~]*$",
        r"^    http-request disable-l7-retry unless \{ method GET HEAD OPTIONS \}$",
        r"^backend (be|bel)_[A-Za-z0-9_.:-]+$",
        r"^backend be_none$",
        r"^    balance roundrobin$",
        r"^frontend fe_[A-Za-z0-9_.:-]+$",
        r"^    bind [0-9A-Fa-f.:\[\]]+:[0-9]+$",
        r"^    use_backend %\[str\([A-Za-z0-9_.:-]+\),map\([^\s,()]+,be_none\)\]$",
    ]
    .iter()
    .map(|r| Regex::new(r).expect("regex"))
    .collect()
}

fn check(name: &str, bytes: &[u8], groups: &[String]) {
    let Ok(a) = capstan_core::accept::<Listener>(bytes) else {
        return;
    };
    let layout = Layout::new(&[(name.to_string(), a.value)], groups, "127.0.0.1");
    let dir = std::path::Path::new("/run/capstan/haproxy");
    let cfg = render(&layout, dir);
    let shapes = shapes();
    for line in cfg.lines() {
        assert!(
            shapes.iter().any(|r| r.is_match(line)),
            "an unexpected line {line:?} in:\n{cfg}"
        );
    }
}

#[test]
fn the_seed_listeners_render() {
    for seed in corpus("listeners", false) {
        assert!(capstan_core::accept::<Listener>(&seed).is_ok());
        check("web", &seed, &["web-tg".to_string()]);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_listeners_and_any_names_render_only_known_lines(
        bytes in inputs(corpus("listeners", false)),
        name in ".{0,20}",
        group in ".{0,20}",
    ) {
        check(&name, &bytes, &[group]);
    }

    #[test]
    fn listeners_with_hostile_values_render_only_known_lines(
        doc in json_mutations(corpus("listeners", false)),
    ) {
        check("web", doc.to_string().as_bytes(), &["web-tg".to_string()]);
    }

    #[test]
    fn generated_listeners_render_only_known_lines(
        doc in json_values(vocabulary(&corpus("listeners", false))),
        name in "[a-z0-9\\-\n;# ]{1,12}",
    ) {
        check(&name, doc.to_string().as_bytes(), std::slice::from_ref(&name));
    }
}
