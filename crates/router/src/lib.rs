//! slotpool-router (filled by its issue).
