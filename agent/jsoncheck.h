/*
 * jsoncheck: a fast, non-allocating JSON validator that answers one
 * question: would jansson 2.14's
 *   json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e)
 * accept these bytes? Ingest uses it to validate a whole body cheaply and
 * then parse only the small attribute part with jansson.
 *
 * It answers "yes" and "no" only when it is sure and "don't know" for the
 * rare expensive corners, so a caller that runs jansson on "don't know"
 * gets exactly jansson's verdict. tests/fuzz/fuzz_jsoncheck.c checks this
 * against the real library.
 * Pure module: no I/O, no allocation, no global state; thread-safe.
 */
#ifndef FERRY_JSONCHECK_H
#define FERRY_JSONCHECK_H

#include <stddef.h>

/** Nesting (objects and arrays) beyond which jsoncheck says -EAGAIN. */
#define JSONCHECK_MAX_DEPTH 64
/** Members of one object whose keys jsoncheck compares for duplicates;
 *  an object with more gives -EAGAIN (-EINVAL on a syntax error or on a
 *  duplicate among its first JSONCHECK_MAX_KEYS keys). */
#define JSONCHECK_MAX_KEYS 64
/** Keys of all the objects open at once that jsoncheck remembers. */
#define JSONCHECK_KEY_SLOTS 256

/**
 * Whether @s[0..@n) is one JSON text that jansson 2.14's
 * json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e) accepts.
 *
 * Returns 0: it does; -EINVAL: it does not; -EAGAIN: cannot tell cheaply
 * (the caller then runs jansson itself). -EAGAIN comes only from rare
 * corners:
 *   - nesting deeper than JSONCHECK_MAX_DEPTH (returned at once);
 *   - an object with more than JSONCHECK_MAX_KEYS members, more than
 *     JSONCHECK_KEY_SLOTS keys in the open objects together, or a key
 *     holding a backslash escape (jansson compares decoded keys): the
 *     duplicate check is incomplete, so a text that is otherwise valid
 *     gives -EAGAIN (a syntax error, or a duplicate that was checked,
 *     still gives -EINVAL);
 *   - a NUL byte right after a number or a literal, which jansson skips
 *     (every other NUL byte gives -EINVAL, as in jansson);
 *   - @n above UINT32_MAX.
 * Numbers never give -EAGAIN: integer and real ranges are decided exactly.
 *
 * @s may be NULL only when @n is 0. Never allocates; uses about 3 KB of
 * stack; one forward pass over the bytes.
 */
int jsoncheck(const char *s, size_t n);

#endif
