/*
 * fuzz_jsoncheck: jsoncheck() against jansson itself. For every input,
 * jsoncheck's answer must agree with json_loadb (the flags ingest uses):
 * 0 only for a text jansson accepts, -EINVAL only for one it refuses, and
 * nothing but 0, -EINVAL or -EAGAIN. Inputs with NUL bytes are compared
 * too (ingest refuses them before either parser, but the contract holds
 * for them as well).
 */
#include <errno.h>
#include <jansson.h>

#include "fuzz.h"
#include "jsoncheck.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int r = jsoncheck(s, size);
    json_error_t jerr;
    json_t *j = json_loadb(s, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                           &jerr);
    FUZZ_CHECK(r == 0 || r == -EINVAL || r == -EAGAIN,
               "jsoncheck returned %d", r);
    FUZZ_CHECK(!(r == 0 && !j), "jsoncheck accepts, jansson refuses: %s",
               jerr.text);
    FUZZ_CHECK(!(r == -EINVAL && j), "jsoncheck refuses, jansson accepts");
    json_decref(j);
    return 0;
}
