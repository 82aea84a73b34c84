/* fuzz_envelope.c - what an aggregator does first with bytes from a peer:
 * unpack the envelope; for an Update, check and decode its delta payload
 * (header, table digest, body SHA-256, finiteness) as the aggregator does
 * before accumulating. */
#include "codec.h"
#include "fuzz_common.h"
#include "msg.h"

static void try_payload(const uint8_t *p, size_t len)
{
	fed_codec_header h;
	if (fed_codec_peek(p, len, &h) != 0 || h.count > (1u << 20))
		return;
	size_t n = (size_t)h.count;
	double *acc = calloc(n ? n : 1, sizeof(double));
	float *out = malloc((n ? n : 1) * sizeof(float));
	if (acc && out) {
		fed_codec_decode(p, len, n, NULL, out, NULL);
		fed_codec_decode_axpy(p, len, n, h.table_digest, 0.5, acc, NULL);
	}
	free(acc);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Fedseg__Envelope *env = NULL;
	int code = 0;
	fs_log_set_level(FS_LOG_ERR);
	/* The raw bytes as a codec payload too (the Update field's content). */
	try_payload(data, size);
	if (fed_msg_unpack(data, size, &env, &code) != 0)
		return 0;
	(void)fed_msg_kind(env);
	if (env->body_case == FEDSEG__ENVELOPE__BODY_UPDATE && env->update)
		try_payload(env->update->payload.data, env->update->payload.len);
	fed_msg_free(env);
	return 0;
}
