package openairelay

import "time"

// SetSnapshotInterval sets how often the snapshot writer saves, for the
// end-to-end tests (package openairelay_test).
func SetSnapshotInterval(d time.Duration) { snapshotEvery.Store(int64(d)) }
