//! Size units (in progress).
