/* model_impl.h - private to model/: the network object and its forward. */
#ifndef FEDSEG_MODEL_IMPL_H
#define FEDSEG_MODEL_IMPL_H

#include "model.h"
#include "torch_c.h"

struct model_net {
	model_spec spec;
	model_table tab;
	tc_tensor **p;      /* one parameter tensor per table entry */
	char dev[32];
};

int model_level_channels(const model_spec *s, int level);
/* Logits [N,classes,D,H,W] for input [N,nmod,D,H,W] (D,H,W multiples of
 * model_spec_divisor). Tensors live in scope s. NULL on error. */
tc_tensor *model_forward(model_net *net, tc_scope *s, tc_tensor *x);

#endif
