/* fedseg-certs-test: `fedseg certs` without the rest of fedseg, so the
 * certs tests run the real command code (certs_main) on their own.
 * Usage: fedseg-certs-test <init|issue|revoke|crl|show> ... */
#include "certs.h"

int main(int argc, char **argv)
{
	argv[0] = "certs";
	return certs_main(argc, argv);
}
