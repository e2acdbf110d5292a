// goverify checks a sealroom transparency log with Go's reference implementations of
// signed notes and Merkle tiles (golang.org/x/mod/sumdb/note and sumdb/tlog, from Debian's
// golang-golang-x-mod-dev), not with sealroom's own code:
//
//   - the checkpoint at URL/log/checkpoint must verify with VKEY (note.Open);
//   - the tiles under URL/log/tile/ (C2SP tlog-tiles layout) must hash to the checkpoint's
//     root (tlog.TileHashReader authenticates every tile it reads against the tree);
//   - for every index i: the entry's record hash, a record proof built by Go from the
//     tiles, and sealroom's own /log/proof/inclusion answer must all check (tlog.CheckRecord);
//   - for every size m <= N: sealroom's /log/proof/consistency answer must check
//     (tlog.CheckTree) against the tree hash Go computes from the tiles.
//
// Usage: goverify URL VKEY. Prints "ok N" and exits 0, or names the failure and exits 1.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var base string

func get(path string) []byte {
	resp, err := http.Get(base + path)
	if err != nil {
		fail("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		fail("GET %s: status %d %v", path, resp.StatusCode, err)
	}
	return data
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goverify: "+format+"\n", args...)
	os.Exit(1)
}

// tiles maps Go's tile paths (tile/H/L/N) onto C2SP's (tile/L/N): the height is fixed at 8.
type tiles struct{}

func (tiles) Height() int { return 8 }

func (tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, t := range ts {
		out[i] = get("/log/" + strings.Replace(t.Path(), "tile/8/", "tile/", 1))
	}
	return out, nil
}

func (tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func hashes(items []string) []tlog.Hash {
	out := make([]tlog.Hash, len(items))
	for i, s := range items {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != 32 {
			fail("bad proof hash %q", s)
		}
		copy(out[i][:], b)
	}
	return out
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: goverify URL VKEY")
	}
	base = strings.TrimRight(os.Args[1], "/")
	v, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail("vkey: %v", err)
	}
	n, err := note.Open(get("/log/checkpoint"), note.VerifierList(v))
	if err != nil {
		fail("checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		fail("checkpoint text %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size %q", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root %q", lines[2])
	}
	tree := tlog.Tree{N: size, Hash: root}
	thr := tlog.TileHashReader(tree, tiles{})
	got, err := tlog.TreeHash(size, thr)
	if err != nil || got != root {
		fail("tree hash from tiles: %v %v, checkpoint says %v", got, err, root)
	}
	for i := int64(0); i < size; i++ {
		leaf := tlog.RecordHash(get(fmt.Sprintf("/log/entries/%d", i)))
		p, err := tlog.ProveRecord(size, i, thr)
		if err != nil {
			fail("prove record %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p, size, root, i, leaf); err != nil {
			fail("record %d (Go's proof from the tiles): %v", i, err)
		}
		var inc struct {
			Hashes []string `json:"hashes"`
		}
		if err := json.Unmarshal(get(fmt.Sprintf("/log/proof/inclusion?index=%d&size=%d", i, size)), &inc); err != nil {
			fail("inclusion answer: %v", err)
		}
		if err := tlog.CheckRecord(hashes(inc.Hashes), size, root, i, leaf); err != nil {
			fail("record %d (sealroom's proof): %v", i, err)
		}
	}
	for m := int64(1); m < size; m++ {
		old, err := tlog.TreeHash(m, thr)
		if err != nil {
			fail("tree hash %d: %v", m, err)
		}
		var con struct {
			Hashes []string `json:"hashes"`
		}
		if err := json.Unmarshal(get(fmt.Sprintf("/log/proof/consistency?old=%d&new=%d", m, size)), &con); err != nil {
			fail("consistency answer: %v", err)
		}
		if err := tlog.CheckTree(hashes(con.Hashes), size, root, m, old); err != nil {
			fail("consistency %d -> %d: %v", m, size, err)
		}
	}
	fmt.Printf("ok %d\n", size)
}
