//! Tonbo, an Arrow-native LSM store on local disk or an object store, as a columnar state
//! store.
//!
//! Tonbo is built on arrow 57 and DataFusion on arrow 59; both are in the build, and
//! [`bridge`] moves record batches between them without copying. The store itself is not
//! implemented yet: `fintech.state_backend` accepts `memory` and `rocksdb`.

pub mod bridge;
