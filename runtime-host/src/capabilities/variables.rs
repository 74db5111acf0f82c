//! `fermyon:spin/variables@2.0.0` and `wasi:config/store`: a component reads
//! only the variables its manifest entry declares.

use super::HostState;
use super::bindings::fermyon::spin::variables as spin_variables;
use super::bindings::wasi::config::store as wasi_config;
use crate::variables::LookupError;

impl spin_variables::Host for HostState {
    async fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, spin_variables::Error>> {
        Ok(match self.grants.variables.get(&name) {
            Ok(value) => Ok(value.to_string()),
            Err(LookupError::InvalidName(why)) => Err(spin_variables::Error::InvalidName(why)),
            Err(LookupError::Undefined(why)) => Err(spin_variables::Error::Undefined(why)),
        })
    }
}

impl wasi_config::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, wasi_config::Error>> {
        // wasi:config answers `none` for names that are undefined or invalid.
        Ok(Ok(self.grants.variables.get(&key).ok().map(str::to_string)))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, wasi_config::Error>> {
        Ok(Ok(self
            .grants
            .variables
            .all()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()))
    }
}
