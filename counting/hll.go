package counting

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
)

// A small HyperLogLog (Flajolet et al., with the linear-counting
// correction for small cardinalities) for unique viewers: precision 12,
// so 4096 one-byte registers and about 1.6% standard error. A sketch
// starts sparse (a map of the registers set) and turns dense past 512 of
// them, so the many ids with few viewers cost little memory. Sketches of
// the same id and day merge register-wise, which is what lets several
// processes add up.

const (
	hllP         = 12
	hllM         = 1 << hllP
	hllSparseMax = 512
)

type hll struct {
	sparse map[uint16]uint8
	dense  []uint8 // hllM registers once dense
}

func newHLL() *hll { return &hll{sparse: make(map[uint16]uint8)} }

// hash64 is FNV-1a followed by the splitmix64 finalizer, so that the
// register index and the rank see well-mixed bits; it must be the same in
// every process, which rules out hash/maphash's random seed.
func hash64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

func (s *hll) add(viewer string) {
	h := hash64(viewer)
	idx := uint16(h >> (64 - hllP))
	rank := uint8(bits.LeadingZeros64(h<<hllP|1<<(hllP-1)) + 1)
	s.set(idx, rank)
}

func (s *hll) set(idx uint16, rank uint8) {
	if s.dense != nil {
		if rank > s.dense[idx] {
			s.dense[idx] = rank
		}
		return
	}
	if rank > s.sparse[idx] {
		s.sparse[idx] = rank
	}
	if len(s.sparse) > hllSparseMax {
		s.dense = make([]uint8, hllM)
		for i, r := range s.sparse {
			s.dense[i] = r
		}
		s.sparse = nil
	}
}

func (s *hll) merge(o *hll) {
	if o.dense != nil {
		for i, r := range o.dense {
			if r != 0 {
				s.set(uint16(i), r)
			}
		}
		return
	}
	for i, r := range o.sparse {
		s.set(i, r)
	}
}

func (s *hll) estimate() int64 {
	var sum float64
	zeros := 0
	reg := func(i int) uint8 {
		if s.dense != nil {
			return s.dense[i]
		}
		return s.sparse[uint16(i)]
	}
	for i := 0; i < hllM; i++ {
		r := reg(i)
		if r == 0 {
			zeros++
		}
		sum += math.Ldexp(1, -int(r))
	}
	alpha := 0.7213 / (1 + 1.079/hllM)
	e := alpha * hllM * hllM / sum
	if e <= 2.5*hllM && zeros > 0 {
		e = hllM * math.Log(float64(hllM)/float64(zeros)) // linear counting
	}
	return int64(math.Round(e))
}

// Encoding: 'S' then (index uint16, rank uint8) triples, or 'D' then the
// hllM registers.
func (s *hll) marshal() []byte {
	if s.dense != nil {
		return append([]byte{'D'}, s.dense...)
	}
	b := make([]byte, 1, 1+3*len(s.sparse))
	b[0] = 'S'
	for i, r := range s.sparse {
		b = binary.BigEndian.AppendUint16(b, i)
		b = append(b, r)
	}
	return b
}

var errSketch = errors.New("counting: bad unique-viewer sketch")

func unmarshalHLL(b []byte) (*hll, error) {
	s := newHLL()
	switch {
	case len(b) == 1+hllM && b[0] == 'D':
		s.sparse, s.dense = nil, append([]uint8(nil), b[1:]...)
	case len(b) >= 1 && b[0] == 'S' && (len(b)-1)%3 == 0:
		for i := 1; i < len(b); i += 3 {
			idx := binary.BigEndian.Uint16(b[i:])
			if idx >= hllM || b[i+2] > 64 {
				return nil, errSketch
			}
			s.set(idx, b[i+2])
		}
	default:
		return nil, errSketch
	}
	return s, nil
}
