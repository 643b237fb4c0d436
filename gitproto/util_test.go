package gitproto_test

import (
	"bufio"
	"io"
	"strconv"
)

func itoa(n int) string { return strconv.Itoa(n) }

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
