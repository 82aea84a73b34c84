/* main.c - the fedseg-aggregator executable (no libtorch). */
#include "agg.h"

int
main(int argc, char **argv)
{
	return agg_main(argc, argv);
}
