package p1

import (
	"bufio"
	"io"
)

// Framer cuts a byte stream into candidate telegrams: from a '/' through
// the '!', four CRC characters and CR LF. It resynchronises on the next
// '/' after garbage, a truncated telegram or an oversize one; Parse then
// decides whether a candidate is a telegram.
type Framer struct {
	r   *bufio.Reader
	buf []byte
	// Skipped counts bytes discarded while looking for a telegram start,
	// and the bytes of candidates abandoned because a new '/' began.
	Skipped uint64
	// Oversize counts candidates abandoned at MaxTelegramBytes.
	Oversize uint64
}

// NewFramer returns a framer reading from r.
func NewFramer(r io.Reader) *Framer {
	return &Framer{r: bufio.NewReaderSize(r, 4096)}
}

// Next returns the next candidate telegram. The slice is valid until the
// next call. It returns the reader's error (io.EOF at the end), dropping
// an incomplete candidate.
func (f *Framer) Next() ([]byte, error) {
	bang := -1
	f.buf = f.buf[:0]
	for {
		c, err := f.r.ReadByte()
		if err != nil {
			f.Skipped += uint64(len(f.buf))
			f.buf = f.buf[:0]
			return nil, err
		}
		switch {
		case c == '/' && bang >= 0 && len(f.buf) == bang+5:
			// "!XXXX" without CR LF: hand it to Parse, keep the '/'.
			f.r.UnreadByte()
			return f.buf, nil
		case c == '/':
			// A telegram never contains '/' after its first byte: this
			// is the start of the next one.
			f.Skipped += uint64(len(f.buf))
			f.buf = append(f.buf[:0], c)
			bang = -1
			continue
		case len(f.buf) == 0:
			f.Skipped++
			continue
		}
		f.buf = append(f.buf, c)
		if c == '!' && bang < 0 {
			bang = len(f.buf) - 1
		}
		if bang >= 0 && (len(f.buf) == bang+7 || c == '\n') {
			return f.buf, nil
		}
		if len(f.buf) >= MaxTelegramBytes {
			f.Oversize++
			f.Skipped += uint64(len(f.buf))
			f.buf = f.buf[:0]
			bang = -1
		}
	}
}
