//! Every spec users write and every record the controllers read, decoded from any bytes: no
//! panic, and a document that is accepted serializes back to one accepted as the same value
//! (what the API stores is what the controllers read).

use capstan_core::requests::{ContinueDeploymentRequest, RunTaskRequest, StopTaskRequest};
use capstan_core::{
    CapacityProvider, Cluster, ContainerInstance, Deployment, Listener, Service, ServiceStatusDoc,
    Spec, TargetGroup, Task, TaskDefinition,
};
use capstan_fuzz::{config, corpus, inputs, json_mutations, json_values, vocabulary};
use proptest::prelude::*;

/// Accepts `bytes` as a `T`; if accepted, checks the round trip and the controllers' decoder.
fn spec<T: Spec + PartialEq + std::fmt::Debug + Send + Sync + 'static>(bytes: &[u8]) {
    let Ok(a) = capstan_core::accept::<T>(bytes) else {
        return;
    };
    let again = serde_json::to_vec(&a.value).expect("an accepted document serializes");
    let b = capstan_core::accept::<T>(&again).unwrap_or_else(|e| {
        panic!(
            "accepted, serialized, then refused: {e}\n{}",
            String::from_utf8_lossy(&again)
        )
    });
    assert_eq!(a.value, b.value, "changed in a round trip");
    // The decoder every controller uses, under a key that may or may not agree with it.
    let decode = capstan_runtime::spec_decoder::<T>();
    for key in [
        "/capstan/x/web/1",
        "/capstan/x/default/web",
        "/capstan/x/a b",
        "/",
    ] {
        let _ = decode(key, bytes);
    }
}

fn all_specs(bytes: &[u8]) {
    spec::<TaskDefinition>(bytes);
    spec::<Service>(bytes);
    spec::<Cluster>(bytes);
    spec::<CapacityProvider>(bytes);
    spec::<TargetGroup>(bytes);
    spec::<Listener>(bytes);
    spec::<RunTaskRequest>(bytes);
    spec::<StopTaskRequest>(bytes);
    spec::<ContinueDeploymentRequest>(bytes);
    // Records the controllers and the API read back; serde alone, never a panic.
    let _ = serde_json::from_slice::<Task>(bytes);
    let _ = serde_json::from_slice::<Deployment>(bytes);
    let _ = serde_json::from_slice::<ContainerInstance>(bytes);
    let _ = serde_json::from_slice::<ServiceStatusDoc>(bytes);
    let _ = serde_json::from_slice::<capstan_core::lb::TargetGroupStatusDoc>(bytes);
}

#[test]
fn the_seed_corpus_decodes_without_a_panic() {
    for seed in corpus("specs", true) {
        all_specs(&seed);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_documents_never_panic_and_accepted_ones_round_trip(
        bytes in inputs(corpus("specs", true))
    ) {
        all_specs(&bytes);
    }

    #[test]
    fn seeds_with_hostile_values_never_panic_and_accepted_ones_round_trip(
        doc in json_mutations(corpus("specs", true))
    ) {
        all_specs(doc.to_string().as_bytes());
    }

    #[test]
    fn generated_documents_never_panic_and_accepted_ones_round_trip(
        doc in json_values(vocabulary(&corpus("specs", true)))
    ) {
        all_specs(doc.to_string().as_bytes());
    }
}
