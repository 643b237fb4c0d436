package viewcache

import "time"

// SetClockForTest sets the clock by which the cache's entries expire.
func (c *Cache) SetClockForTest(now func() time.Time) { c.now = now }
