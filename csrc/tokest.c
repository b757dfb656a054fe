/*
 * tokest.c: a fast token estimate of UTF-8 text, for where no exact
 * tokenizer is configured.
 *
 * Interface: vm_estimate_tokens, vm_estimate_tokens_many (see vm.h).
 *
 * It follows the pre-tokenizer of byte-pair encoders such as cl100k_base and
 * o200k_base, which split text into runs before merging bytes, and prices
 * each run as those encoders tend to (in twelfths of a token):
 *   - a letter run of length L (a preceding space is free): 1 token, plus
 *     1/12 per letter beyond 7: common words are one token, long or rare ones
 *     split;
 *   - an apostrophe between letters starts a contraction ('s, 't, 'll ...)
 *     that counts as the word after it;
 *   - a digit run: one token per 3 digits;
 *   - a punctuation run: 1 token, plus 1/2 per further character;
 *   - a 3- or 4-byte UTF-8 character (CJK, emoji): 1 token each; a 2-byte
 *     one (accented Latin, Greek, Cyrillic) counts as 2 letters;
 *   - a single space is free; a longer run of blanks, or a line break, 1.
 * An approximation, admitted: it knows no vocabulary, so it undercounts rare
 * words and code. The kernel corrects it with the provider's reported usage.
 */
#include "vm.h"

/* byte classes; unlisted ASCII (controls, punctuation, symbols) is C_PUNCT */
enum { C_PUNCT, C_SPACE, C_NL, C_ALPHA, C_DIGIT, C_APOS, C_U2, C_U3, C_CONT };

#define R(a, b, c) [a... b] = c
static const uint8_t cls[256] = {
    [' '] = C_SPACE,      ['\t'] = C_SPACE, ['\n'] = C_NL, ['\r'] = C_NL, ['\f'] = C_NL,
    ['\v'] = C_NL,        R('a', 'z', C_ALPHA), R('A', 'Z', C_ALPHA), R('0', '9', C_DIGIT),
    ['\''] = C_APOS,      R(0x80, 0xbf, C_CONT), R(0xc0, 0xdf, C_U2), R(0xe0, 0xff, C_U3),
};
#undef R

/* 1 + the weight in letters of a byte inside a letter run; 0: ends the run */
#define R(a, b, c) [a... b] = c
static const uint8_t in_word[256] = {
    R('a', 'z', 2), R('A', 'Z', 2), R(0x80, 0xbf, 1), R(0xc0, 0xdf, 3),
};
#undef R

uint64_t vm_estimate_tokens(const char *text, size_t n)
{
    const uint8_t *b = (const uint8_t *)text;
    uint64_t twelfths = 0;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        switch (cls[b[i]]) {
        case C_ALPHA:
        case C_U2:
        case C_CONT: {
            uint32_t len = 0, w;
            for (; i < n && (w = in_word[b[i]]); i++)
                len += w - 1;
            twelfths += 12 + (len > 7 ? len - 7 : 0);
            break;
        }
        case C_U3:
            twelfths += 12;
            for (i++; i < n && cls[b[i]] == C_CONT; i++)
                ;
            break;
        case C_DIGIT:
            for (; i < n && cls[b[i]] == C_DIGIT; i++)
                ;
            twelfths += 12 * ((i - start + 2) / 3);
            break;
        case C_APOS:
            if (i > 0 && i + 1 < n && cls[b[i - 1]] == C_ALPHA && cls[b[i + 1]] == C_ALPHA) {
                i++; /* a contraction: priced as the letter run that follows */
                break;
            }
            /* fall through */
        case C_PUNCT:
            for (; i < n && (cls[b[i]] == C_PUNCT || cls[b[i]] == C_APOS); i++)
                ;
            twelfths += 12 + 6 * (i - start - 1);
            break;
        case C_SPACE:
            for (; i < n && cls[b[i]] == C_SPACE; i++)
                ;
            if (i - start > 1)
                twelfths += 12;
            break;
        default: /* C_NL: a run of line breaks and blanks */
            for (; i < n && (cls[b[i]] == C_NL || cls[b[i]] == C_SPACE); i++)
                ;
            twelfths += 12;
            break;
        }
    }
    return (twelfths + 6) / 12;
}

void vm_estimate_tokens_many(const char *text, const uint64_t *offsets, size_t n, uint32_t *out)
{
    for (size_t k = 0; k < n; k++) {
        uint64_t t = vm_estimate_tokens(text + offsets[k], (size_t)(offsets[k + 1] - offsets[k]));
        out[k] = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
    }
}
