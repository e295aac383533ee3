//! The cluster query language (memberOf expressions) from any text: parsing never panics, and
//! an expression that parses evaluates against any instance without a panic.

use std::collections::BTreeMap;

use capstan_fuzz::{config, corpus, inputs};
use capstan_plan::query::{Facts, parse};
use proptest::prelude::*;

fn check(text: &str, attributes: &BTreeMap<String, String>, groups: &[String]) {
    let Ok(expr) = parse(text) else {
        return;
    };
    for connected in [true, false] {
        let facts = Facts {
            instance_id: "i-1",
            attributes,
            agent_connected: connected,
            agent_version: "1.2.3",
            registered_at: Some(1.7e9),
            running_tasks_count: 3,
            task_groups: groups,
        };
        let _ = expr.eval(&facts);
    }
}

#[test]
fn the_seed_expressions_parse() {
    for seed in corpus("query", false) {
        let text = String::from_utf8(seed).expect("utf-8 seed");
        assert!(parse(text.trim()).is_ok(), "{text}");
        check(text.trim(), &BTreeMap::new(), &[]);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_expressions_never_panic(bytes in inputs(corpus("query", false))) {
        let text = String::from_utf8_lossy(&bytes);
        let attrs = BTreeMap::from([
            ("ecs.availability-zone".to_string(), "dev-a".to_string()),
            ("ecs.instance-type".to_string(), "t2.micro".to_string()),
        ]);
        check(&text, &attrs, &["service:web".to_string()]);
    }

    #[test]
    fn generated_expressions_never_panic(
        text in "[ a-z:.\\-\\[\\],()!=<>~&|*0-9TZ]{0,80}",
        attrs in proptest::collection::btree_map("[a-z.:-]{1,12}", ".{0,12}", 0..4),
    ) {
        check(&text, &attrs, &[]);
    }
}
