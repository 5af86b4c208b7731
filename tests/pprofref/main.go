// Command pprofref runs google/pprof's profile package on files, so that tests
// can compare autopgo's results with upstream's. The tests copy the package
// from the Go toolchain ($GOROOT/src/cmd/vendor/github.com/google/pprof/profile)
// next to this file at test time; it is never committed.
//
//	pprofref merge OUT IN...           profile.Merge
//	pprofref scalemerge OUT R IN...    each IN Scale(R) (a ratio before each), then profile.Merge
//	pprofref prune OUT DROP KEEP IN    Parse, Prune(DROP, KEEP or nil)
//	pprofref parse IN                  Parse only; prints the error, if any
package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"

	"autopgo.test/pprofref/profile"
)

func read(path string) *profile.Profile {
	f, err := os.Open(path)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		fail(err)
	}
	return p
}

func write(path string, p *profile.Profile) {
	f, err := os.Create(path)
	if err != nil {
		fail(err)
	}
	if err := p.Write(f); err != nil {
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	args := os.Args[1:]
	if len(args) < 2 {
		fail(fmt.Errorf("usage: pprofref merge|prune|parse ..."))
	}
	switch args[0] {
	case "merge":
		var ps []*profile.Profile
		for _, in := range args[2:] {
			ps = append(ps, read(in))
		}
		p, err := profile.Merge(ps)
		if err != nil {
			fail(err)
		}
		write(args[1], p)
	case "scalemerge":
		var ps []*profile.Profile
		for i := 2; i+1 < len(args); i += 2 {
			ratio, err := strconv.ParseFloat(args[i], 64)
			if err != nil {
				fail(err)
			}
			p := read(args[i+1])
			p.Scale(ratio)
			ps = append(ps, p)
		}
		p, err := profile.Merge(ps)
		if err != nil {
			fail(err)
		}
		write(args[1], p)
	case "prune":
		p := read(args[4])
		var keep *regexp.Regexp
		if args[3] != "" {
			keep = regexp.MustCompile(args[3])
		}
		p.Prune(regexp.MustCompile(args[2]), keep)
		write(args[1], p)
	case "parse":
		read(args[1])
	default:
		fail(fmt.Errorf("unknown command %q", args[0]))
	}
}
