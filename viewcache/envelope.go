package viewcache

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"
)

// An entry travels to memcached in a small checksummed envelope, so that
// a truncated, corrupt or foreign value is recognized and treated as a
// miss:
//
//	magic "VC1" | created ns | soft ns | hard ns | render ns | n gens |
//	n × gen | payload | crc32 (Castagnoli) of all before it
//
// The generations are those of the entry's dependencies when it was
// rendered; a reader compares them with the current ones (fetched in the
// same round trip) instead of embedding them in the key, which would need
// a second round trip.

var (
	envMagic = [3]byte{'V', 'C', '1'}
	crcTable = crc32.MakeTable(crc32.Castagnoli)

	errEnvelope = errors.New("viewcache: bad envelope")
)

const envHeader = 3 + 8*4 + 2

type entry struct {
	value   []byte
	gens    []uint64
	created time.Time
	soft    time.Time // after it, serve stale and refresh
	hard    time.Time // after it, never serve
	render  time.Duration
}

func (e *entry) size() int64 { return int64(len(e.value) + 8*len(e.gens) + 96) }

func encode(e *entry) []byte {
	b := make([]byte, 0, envHeader+8*len(e.gens)+len(e.value)+4)
	b = append(b, envMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.created.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.soft.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.hard.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.render))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.gens)))
	for _, g := range e.gens {
		b = binary.BigEndian.AppendUint64(b, g)
	}
	b = append(b, e.value...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

func decode(b []byte) (*entry, error) {
	if len(b) < envHeader+4 || [3]byte(b[:3]) != envMagic {
		return nil, errEnvelope
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, errEnvelope
	}
	u := func(i int) int64 { return int64(binary.BigEndian.Uint64(body[i:])) }
	e := &entry{
		created: time.Unix(0, u(3)),
		soft:    time.Unix(0, u(11)),
		hard:    time.Unix(0, u(19)),
		render:  time.Duration(u(27)),
	}
	n := int(binary.BigEndian.Uint16(body[35:]))
	if len(body) < envHeader+8*n {
		return nil, errEnvelope
	}
	e.gens = make([]uint64, n)
	for i := range n {
		e.gens[i] = binary.BigEndian.Uint64(body[envHeader+8*i:])
	}
	e.value = body[envHeader+8*n:]
	return e, nil
}
