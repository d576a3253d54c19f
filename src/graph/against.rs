//! Diff-like calls with an explicit base: the layer's own parent, another layer, or nothing
//! at all. Docker's plugin protocol reads an empty parent as "nothing" (the whole layer is the
//! change), while [`Driver`](crate::Driver)'s `None` means the layer's own parent.

use super::{diff, Graph};
use crate::driver::{ChangeSet, DiffStream};
use crate::error::Result;
use crate::store::id;

/// What a diff-like call compares a layer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffBase<'a> {
    /// The layer's own parent (nothing for a base layer): [`Driver`](crate::Driver)'s `None`.
    OwnParent,
    /// Nothing: every path of the layer (with its parents' content) is an addition.
    Nothing,
    /// Another layer.
    Layer(&'a str),
}

impl Graph {
    /// The base layer `base` names for `id`, after checking that both exist.
    fn resolve_base(&self, id: &str, base: DiffBase<'_>) -> Result<(Option<String>, bool)> {
        let (resolved, rec) = match base {
            DiffBase::OwnParent => (self.base_of(id, None)?, self.store().record(id)?),
            DiffBase::Layer(p) => (self.base_of(id, Some(p))?, self.store().record(id)?),
            DiffBase::Nothing => {
                id::validate(id)?;
                (None, self.store().record(id)?)
            }
        };
        let own = resolved == rec.parent;
        Ok((resolved, own && rec.exact))
    }

    /// An uncompressed tar of the changes of `id` relative to `base`.
    pub fn diff_against(&self, id: &str, base: DiffBase<'_>) -> Result<DiffStream> {
        let (base, exact) = self.resolve_base(id, base)?;
        if exact {
            return diff::exact(self, id);
        }
        diff::export(self, id, base.as_deref())
    }

    /// The changes of `id` relative to `base`, sorted by path.
    pub fn changes_against(&self, id: &str, base: DiffBase<'_>) -> Result<ChangeSet> {
        let (base, _) = self.resolve_base(id, base)?;
        let (list, _, _) = diff::changes(self, id, base.as_deref())?;
        // As `Driver::changes`: never list what `diff` would refuse to export.
        diff::refuse_unexportable(id, &list)?;
        Ok(list)
    }

    /// Bytes of added or modified non-directories of `id` relative to `base`.
    pub fn diff_size_against(&self, id: &str, base: DiffBase<'_>) -> Result<u64> {
        let (resolved, exact) = self.resolve_base(id, base)?;
        if exact {
            if let Some(size) = self.store().record(id)?.size {
                return Ok(size);
            }
        }
        diff::size(self, id, resolved.as_deref())
    }
}
