//! ReferenceGrant: whether an object may refer to one in another namespace.
use kgw_common::resources::Index;

/// The referring side: an object of `group`/`kind` in `namespace`.
pub(crate) struct From<'a> {
    pub(crate) group: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) namespace: &'a str,
}

/// The referred side: `group`/`kind` `namespace/name`.
pub(crate) struct To<'a> {
    pub(crate) group: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
}

/// A reference within one namespace needs no grant; across namespaces, a ReferenceGrant in
/// the target's namespace must allow it (`to.name` absent: any object of that kind).
pub(crate) fn permitted(index: &Index, from: &From<'_>, to: &To<'_>) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    let start = (to.namespace.to_string(), String::new());
    index
        .reference_grants
        .range(start..)
        .take_while(|((namespace, _), _)| namespace == to.namespace)
        .any(|(_, grant)| {
            grant
                .spec
                .from
                .iter()
                .any(|f| f.group == from.group && f.kind == from.kind && f.namespace == from.namespace)
                && grant
                    .spec
                    .to
                    .iter()
                    .any(|t| t.group == to.group && t.kind == to.kind && t.name.as_deref().is_none_or(|n| n == to.name))
        })
}
