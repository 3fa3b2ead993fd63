package openairelay

import "time"

// SetSnapshotInterval sets how often the snapshot writer saves, for the
// end-to-end tests (package openairelay_test).
func SetSnapshotInterval(d time.Duration) { snapshotEvery.Store(int64(d)) }

// SetClientWriteTimeout sets how long a write may wait for a client that
// does not read, for the end-to-end tests.
func SetClientWriteTimeout(d time.Duration) { clientWriteTimeout.Store(int64(d)) }
