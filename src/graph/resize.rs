//! [`Graph::resize`]: growing a writable layer offline (Windows' `ExpandSandboxSize`).

use tracing::info;

use super::Graph;
use crate::error::Result;
use crate::store::id;

impl Graph {
    /// Grows the writable layer `id` to `size` bytes. The layer must be idle (not mounted, no
    /// children); shrinking is refused, and backends without sized layers refuse the call.
    pub fn resize(&self, id: &str, size: u64) -> Result<()> {
        id::validate(id)?;
        let store = self.store();
        let rec = store.record(id)?;
        self.ensure_idle(&rec)?;
        let _guard = store.busy_guard(id, true, "resize")?;
        let chain = store.chain(id)?;
        self.ensure_idle(&chain[0])?;
        self.backend().resize(store, &chain, size)?;
        let l = store.lock()?;
        let mut now = store.record(id)?;
        now.storage_opt
            .retain(|k, _| !k.eq_ignore_ascii_case("size"));
        now.storage_opt.insert("size".into(), size.to_string());
        l.db().write(|w| w.put(&now))?;
        info!(layer = id, size, "resized layer");
        Ok(())
    }
}
