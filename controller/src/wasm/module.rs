//! What a module must be before it is cached or served: a valid WebAssembly module that
//! speaks the proxy-wasm ABI. Errors never quote the bytes: a refused file may be anything
//! on the controller's host, so a message says only what is wrong and where.

/// `\0asm` then version 1, little-endian.
const WASM_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Every proxy-wasm module exports one `proxy_abi_version_*` function naming its ABI.
const ABI_EXPORT_PREFIX: &str = "proxy_abi_version_";

/// Why bytes are not a module Envoy can run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly module (no \\0asm version 1 header)")]
    NotWasm,
    #[error("invalid WebAssembly module (byte offset {offset})")]
    Invalid { offset: u64 },
    #[error("not a proxy-wasm module: it exports no {ABI_EXPORT_PREFIX}* function")]
    NoAbi,
    #[error("not a proxy-wasm module: it exports no memory")]
    NoMemory,
}

/// Checks that `bytes` are a valid proxy-wasm module.
pub fn check(bytes: &[u8]) -> Result<(), ModuleError> {
    if !bytes.starts_with(&WASM_HEADER) {
        return Err(ModuleError::NotWasm);
    }
    // wasmparser's messages can quote what it read; keep only the offset.
    wasmparser::Validator::new()
        .validate_all(bytes)
        .map_err(|error| ModuleError::Invalid { offset: error.offset() })?;
    let (mut abi, mut memory) = (false, false);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|error| ModuleError::Invalid { offset: error.offset() })?;
        if let wasmparser::Payload::ExportSection(exports) = payload {
            for export in exports {
                let export = export.map_err(|error| ModuleError::Invalid { offset: error.offset() })?;
                match export.kind {
                    wasmparser::ExternalKind::Func => abi |= export.name.starts_with(ABI_EXPORT_PREFIX),
                    wasmparser::ExternalKind::Memory => memory = true,
                    _ => {}
                }
            }
        }
    }
    match (abi, memory) {
        (false, _) => Err(ModuleError::NoAbi),
        (true, false) => Err(ModuleError::NoMemory),
        (true, true) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).expect("test module")
    }

    #[test]
    fn accepts_a_proxy_wasm_module() {
        let bytes = module(r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#);
        assert_eq!(check(&bytes), Ok(()));
    }

    #[test]
    fn refuses_other_files_without_quoting_them() {
        let secret = b"root:$6$secret-hash:19000:0:99999:7:::\n";
        let error = check(secret).expect_err("not wasm");
        assert_eq!(error, ModuleError::NotWasm);
        assert!(!error.to_string().contains("root"), "{error}");
    }

    #[test]
    fn refuses_a_truncated_module_with_its_offset_only() {
        let mut bytes = module(r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#);
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(check(&bytes), Err(ModuleError::Invalid { .. })));
    }

    #[test]
    fn refuses_modules_without_the_abi() {
        assert_eq!(check(&module("(module)")), Err(ModuleError::NoAbi));
        assert_eq!(
            check(&module(r#"(module (func (export "proxy_abi_version_0_2_1")))"#)),
            Err(ModuleError::NoMemory)
        );
    }
}
