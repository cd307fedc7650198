package provisioners

import (
	"crypto/rand"
	"math/big"
)

// passwordAlphabet leaves out look-alikes (0/O, 1/l/I) so a password read
// off a screen can be typed.
const passwordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// RandomPassword returns n characters from a 57-letter alphabet, from
// crypto/rand (24 characters are ~140 bits).
func RandomPassword(n int) (string, error) {
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(passwordAlphabet))))
		if err != nil {
			return "", err
		}
		b[i] = passwordAlphabet[k.Int64()]
	}
	return string(b), nil
}
