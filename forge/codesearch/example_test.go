package codesearch_test

import (
	"fmt"

	"github.com/forgekit/forgekit/forge/codesearch"
)

func ExampleLines() {
	content := []byte("package main\n\nfunc main() {\n\tprintln(\"Hello\")\n}\n")
	lines, more := codesearch.Lines(content, "hello", 5)
	for _, l := range lines {
		mark := " "
		if !l.Context {
			mark = ">"
		}
		fmt.Printf("%s %d %s %v\n", mark, l.N, l.Text, l.Match)
	}
	fmt.Println("more:", more)
	// Output:
	//   3 func main() { []
	// > 4 	println("Hello") [[10 15]]
	//   5 } []
	// more: 0
}
