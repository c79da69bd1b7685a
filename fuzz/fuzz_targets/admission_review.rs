//! The validating webhook's decoding of a request body: the AdmissionReview, then its
//! object (each item of a List) into our resource types, applied to an empty index. What
//! comes after (translation, the controller's dry run) needs a running controller.
#![no_main]

use gateway::webhook::{
    Verdict, apply_objects,
    review::{AdmissionResponse, AdmissionReview},
};
use kgw_common::resources::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(review) = AdmissionReview::decode_body(data) else {
        return;
    };
    let Some(request) = review.request else {
        return;
    };
    let _ = request.describe();
    let mut verdict = Verdict::default();
    let mut index = Index::default();
    for object in [&request.object, &request.old_object].into_iter().flatten() {
        let _ = apply_objects(&request, object, &mut index, &mut verdict);
    }
    let findings: Vec<String> = verdict.findings.iter().map(ToString::to_string).collect();
    let answer = AdmissionReview::answer(AdmissionResponse {
        uid: request.uid.clone(),
        allowed: findings.is_empty(),
        warnings: findings,
        ..Default::default()
    });
    let _ = serde_json::to_vec(&answer);
});
