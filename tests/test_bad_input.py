"""Every mistake a user can make gets one line naming the key, the value and what is allowed, exit
code 2, no traceback, and leaves no folder behind: the real CLI, in a subprocess, on tiny data
(100 training images in batches of 25, 400 validation images, 2 epochs). Every refusal goes once through
the CLI's entry point in this process (``cli(..., in_process=True)``); the ``*_real_cli`` cases, one per kind of
refusal, in a subprocess with REG_RUNNER_TEST_CLI=subprocess."""

import gzip

import numpy as np
import pytest
from conftest import ROOT, TINY, make_tiny_mnist

from reg_runner.data import idx
from reg_runner.data.mnist import EMBEDDED
from reg_runner.errors import UserError, options
from reg_runner.records import RunFolder

# (command-line overrides, a part of the one line it must print)
CONFIG_CASES = [
    # model
    ("model.norm=groupnorm", "model.norm='groupnorm' is not allowed: one of none, batchnorm, layernorm, rmsnorm"),
    ("model.dropout=1.0", "model.dropout=1.0 is not allowed: a number in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout=-0.1 is not allowed: a number in [0, 1)"),
    ("model.dropout=abc", "model.dropout='abc' is not allowed: a number in [0, 1)"),
    ("model.activation=swish", "model.activation='swish' is not allowed: one of relu,"),
    ("model.init=zeros", "model.init='zeros' is not allowed: one of default,"),
    ("model.width=0", "model.width=0 is not allowed: an integer >= 1"),
    ("model.width=1000000", "model.width=1000000 is not allowed: a smaller value: this model has 2e+12 parameters "
     "and the run needs about"),
    ("model.depth=2.5", "model.depth=2.5 is not allowed: an integer in [0, 1000]"),
    ("model.depth=-1", "model.depth=-1 is not allowed: an integer in [0, 1000]"),
    ("model.residual=yes", "model.residual='yes' is not allowed: true or false"),
    ("model.norm_position=middle", "model.norm_position='middle' is not allowed: one of before_activation,"),
    ("model.norm_position=after_activation", "model.norm_position='after_activation' is not allowed: not set while "
     "model.norm=none"),
    ("model.residual=true model.depth=1", "model.residual=true is not allowed: false with model.depth=1, "
     "model.width=100: no block has equal input and output widths (64 inputs)"),
    ("model=cnn model.norm=groupnorm model.groups=3", "model.groups=3 is not allowed: a divisor of every block's "
     "channels (model.channels=[16, 32]: 16 is not a multiple of it)"),
    ("model=cnn model.channels=[8,8,8,8]", "model.channels=[8, 8, 8, 8] is not allowed: at most 3 blocks with "
     "model.pool=max: each halves the 8x8 images"),
    ("model=cnn model.groups=2", "model.groups=2 is not allowed: not set while model.norm=none: only groupnorm has "
     "groups"),
    ("model=cnn model.kernel=4", "model.kernel=4 is not allowed: an odd integer in [1, 11]"),
    ("model=cnn model.channels=16", "model.channels=16 is not allowed: a list of 1 to 16 channel counts"),
    ("model=cnn model.norm=rmsnorm", "model.norm='rmsnorm' is not allowed: one of none, batchnorm, layernorm, "
     "groupnorm"),
    ("model._target_=reg_runner.model.mlp.ACTIVATIONS", "model._target_='reg_runner.model.mlp.ACTIVATIONS' is not "
     "allowed: a model family: the dotted path of a subclass of reg_runner.model.ModelFamily, or a torch.nn.Module "
     "class"),
    # a torch.nn.Module class is a family: the other keys are its constructor's arguments
    ("model._target_=reg_runner.model.mlp_net.MLPNet", "model.depth=3 is not allowed: an argument of "
     "reg_runner.model.mlp_net.MLPNet, which takes no 'depth' (its arguments: in_features, cfg; the data sets "
     "n_classes)"),
    ("data._target_=reg_runner.data.nope.Nope", "data._target_='reg_runner.data.nope.Nope' is not allowed: a data "
     "family: the dotted path of a subclass of reg_runner.data.DataFamily, e.g. reg_runner.data.mnist.MNIST "
     "(ModuleNotFoundError"),
    ("data=cifar10", "holds neither cifar-10-python.tar.gz nor cifar-10-batches-py/ of CIFAR-10; download "
     "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    # augmentation
    ("augmentation=crop augmentation.pad=8", "augmentation.pad=8 is not allowed: less than the images' side (8 "
     "pixels)"),
    ("augmentation=crop augmentation.pad=0 augmentation.fill=reflect", "augmentation.fill='reflect' is not allowed: "
     "not set while augmentation.pad=0"),
    ("augmentation=crop augmentation.fill=white", "augmentation.fill='white' is not allowed: one of black, reflect"),
    # reg
    ("reg.l2=-1e-4", "reg.l2=-0.0001 is not allowed: a number >= 0"),
    ("reg.l1=abc", "reg.l1='abc' is not allowed: a number >= 0"),
    ("reg.l1=nan", "reg.l1=nan is not allowed: a number >= 0"),
    ("reg.l2=inf", "reg.l2=inf is not allowed: a number >= 0"),
    ("reg.apply_to=biases", "reg.apply_to='biases' is not allowed: one of weights, all"),
    ("reg.apply_to=all", "reg.apply_to='all' is not allowed: not set while reg.l1 = reg.l2 = 0"),
    # data
    ("data.train_fraction=0", "data.train_fraction=0 is not allowed: a number in (0, 1]"),
    ("data.train_fraction=1.5", "data.train_fraction=1.5 is not allowed: a number in (0, 1]"),
    ("data.train_fraction=1.0", "data.train_fraction=1.0 is not allowed: a smaller fraction: this one leaves none"),
    ("data.train_fraction=0.0001", "data.train_fraction=0.0001 is not allowed: a larger fraction: this one selects no"),
    ("data.val_size=0", "data.val_size=0 is not allowed: null or an integer >= 1"),
    ("data.val_size=100000", "data.val_size=100000 is not allowed: at most 400, the images outside the training"),
    ("data.split_seed=-3", "data.split_seed=-3 is not allowed: an integer in [0, "),
    ("data.stratified=maybe", "data.stratified='maybe' is not allowed: true or false"),
    ("data.normalize=1", "data.normalize=1 is not allowed: true or false"),
    ("data.root=''", "data.root='' is not allowed: null or a non-empty string"),
    # a folder is what it claims: MNIST's files given as Fashion-MNIST's (data.verify, true unless TINY's false)
    (f"data=fashion_mnist data.root={EMBEDDED} data.verify=true", f"{EMBEDDED}/train-images-idx3-ubyte.gz is not "
     "Fashion-MNIST's train-images-idx3-ubyte.gz: its md5 is 56f11203c65dcbeead45b51e76a4d637, not the published "
     "8d4fb7e6c68d591d4c3dfef9ec88bf0d; give the files as published, or data.verify=false"),
    ("data.root=null data.verify=false", "data.verify=false is not allowed: not set while data.root=null"),
    # trainer
    ("trainer.batch_size=0", "trainer.batch_size=0 is not allowed: an integer >= 1"),
    ("trainer.batch_size=5000", "trainer.batch_size=5000 is not allowed: at most 100, the training images"),
    ("trainer.batch_size=99 model.norm=batchnorm", "trainer.batch_size=99 is not allowed: a size that leaves no "
     "batch of 1 image with model.norm=batchnorm"),
    ("trainer.batch_size=1 model.norm=batchnorm", "trainer.batch_size=1 is not allowed: a size that leaves no batch"),
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed: an integer >= 1"),
    ("trainer.epochs=1.5", "trainer.epochs=1.5 is not allowed: an integer >= 1"),
    # a count numpy and torch cannot hold (int64): refused, not a traceback once the run's folder is made
    ("trainer.epochs=99999999999999999999999", "trainer.epochs=99999999999999999999999 is not allowed: an integer in "
     "[1, 2^63)"),
    ("trainer.eval_every=0", "trainer.eval_every=0 is not allowed: an integer >= 1"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0 is not allowed: an integer >= 1"),
    ("trainer.eval_precision=fp16", "trainer.eval_precision='fp16' is not allowed: one of fp32, bf16"),
    ("trainer.accumulate=0", "trainer.accumulate=0 is not allowed: an integer >= 1"),
    ("trainer.accumulate=10", "trainer.accumulate=10 is not allowed: at most 4, the batches of an epoch"),
    ("trainer.drop_last=1", "trainer.drop_last=1 is not allowed: true or false"),
    ("trainer.grad_clip=0", "trainer.grad_clip=0 is not allowed: null or a number > 0"),
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1 is not allowed: null or a number > 0"),
    ("trainer.early_stopping.enabled=true trainer.early_stopping.monitor=test/acc",
     "trainer.early_stopping.monitor='test/acc' is not allowed: val/acc or val/loss (a validation metric"),
    ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience=0 is not allowed: an integer >= 1"),
    ("trainer.early_stopping.min_delta=-1", "trainer.early_stopping.min_delta=-1 is not allowed: a number >= 0"),
    ("trainer.early_stopping.patience=5", "trainer.early_stopping.patience=5 is not allowed: not set while "
     "trainer.early_stopping.enabled=false"),
    ("trainer.device=tpu", "trainer.device='tpu' is not allowed: one of auto, cpu, cuda, cuda:N, mps"),
    ("trainer.device=cuda:x", "trainer.device='cuda:x' is not allowed: one of auto, cpu, cuda, cuda:N, mps"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0 is not allowed: an integer >= 1"),
    ("trainer.deterministic=sure", "trainer.deterministic='sure' is not allowed: true or false"),
    # optimizer
    ("optimizer.lr=0", "optimizer.lr=0 is not allowed: a number in (0, 3.40282e+38]"),
    ("optimizer.lr=-1", "optimizer.lr=-1 is not allowed: a number in (0, 3.40282e+38]"),
    ("optimizer.lr=nan", "optimizer.lr=nan is not allowed: a number in (0, 3.40282e+38]"),
    # rates the optimizers' float32 steps cannot hold: refused, not a traceback mid-run
    ("optimizer.lr=1e300", "optimizer.lr=1e+300 is not allowed: a number in (0, 3.40282e+38]"),
    ("optimizer.lr=1e38", "optimizer.lr=1e+38 is not allowed: a smaller rate: one step of torch.optim.Adam at 1e+38 "
     "overflows float32"),
    ("optimizer.lr=1e38 optimizer.lr_scaling=linear optimizer.base_batch_size=1",
     "optimizer.lr=1e+38 is not allowed: at most 1.361e+37 with optimizer.lr_scaling=linear and a batch of 25"),
    ("scheduler=onecycle scheduler.max_lr=1e38", "scheduler.max_lr=1e+38 is not allowed: a smaller rate: one step of "
     "torch.optim.Adam at 1e+38 overflows float32"),
    ("optimizer.betas=[0.9,2.0]", "optimizer.betas=[0.9, 2.0] is not allowed: a list of two numbers, each in [0, 1)"),
    ("optimizer.betas=0.9", "optimizer.betas=0.9 is not allowed: a list of two numbers, each in [0, 1)"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9] is not allowed: a list of two numbers"),
    ("optimizer.eps=0", "optimizer.eps=0 is not allowed: a number > 0"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1 is not allowed: a number >= 0"),
    ("optimizer=sgd optimizer.momentum=1.5", "optimizer.momentum=1.5 is not allowed: a number in [0, 1)"),
    ("optimizer=sgd optimizer.momentum=0 optimizer.nesterov=true",
     "optimizer.nesterov=true is not allowed: false unless optimizer.momentum > 0"),
    ("optimizer=rmsprop optimizer.alpha=1.5", "optimizer.alpha=1.5 is not allowed: a number in [0, 1)"),
    ("optimizer=lion +optimizer.momentm=0.9", "optimizer.momentm=0.9 is not allowed: pytorch_optimizer.Lion takes "
     "no argument 'momentm'"),
    ("+optimizer.foo=1", "optimizer.foo=1 is not allowed: torch.optim.Adam takes no argument 'foo'"),
    ("optimizer._target_=torch.optim.Nope", "optimizer._target_='torch.optim.Nope' is not allowed: an importable "
     "optimizer class"),
    ("optimizer._target_=collections.OrderedDict", "optimizer._target_='collections.OrderedDict' is not allowed: a "
     "subclass of torch.optim.Optimizer"),
    ("optimizer._target_=Adam", "optimizer._target_='Adam' is not allowed: a dotted Python path to a class"),
    ("optimizer.lr_scaling=cubic", "optimizer.lr_scaling='cubic' is not allowed: one of none, linear, sqrt"),
    ("optimizer.base_batch_size=0", "optimizer.base_batch_size=0 is not allowed: an integer >= 1"),
    ("optimizer.base_batch_size=600", "optimizer.base_batch_size=600 is not allowed: not set while "
     "optimizer.lr_scaling=none"),
    ("optimizer._target_=torch.optim.SparseAdam ~optimizer.weight_decay", "optimizer._target_='torch.optim.SparseAdam'"
     " is not allowed: an optimizer that steps this model's dense gradients"),
    ("+optimizer.fused=true +optimizer.foreach=true", "`fused` and `foreach` cannot be `True` together"),
    ("model.width=${oops}", "model.width='${oops}' is not allowed: a value or an interpolation that resolves"),
    ("hydra.job.name=", "hydra.job.name='' is not allowed: a name of letters, digits"),
    # top level
    ("seed=-1", "seed=-1 is not allowed: null or an integer in [0, 2^63)"),
    ("seed=99999999999999999999999", "seed=99999999999999999999999 is not allowed: null or an integer in [0, 2^63)"),
    ("seed=abc", "seed='abc' is not allowed: null or an integer"),
    ("seed=1.5", "seed=1.5 is not allowed: null or an integer"),
    ("objective=test/acc", "objective='test/acc' is not allowed: val/acc or val/loss (a validation metric: the test "
     "set never chooses anything)"),
    ("objective=val/f1", "objective='val/f1' is not allowed: val/acc or val/loss"),
    # keys that nothing reads
    ("+foo=bar", "foo='bar' is not allowed: the config has no key 'foo'"),
    ("+model.dropuot=0.5", "model.dropuot=0.5 is not allowed: model has no key 'dropuot' (did you mean dropout?)"),
    ("+trainer.epoch=5", "trainer.epoch=5 is not allowed: trainer has no key 'epoch' (did you mean epochs?)"),
    ("scheduler=step +scheduler.eta_min=0.1", "scheduler.eta_min=0.1 is not allowed: scheduler has no key 'eta_min'"),
    ("augmentation=none +augmentation.sigma=0.5", "augmentation.sigma=0.5 is not allowed: augmentation has no key"),
    ("+search.dropout=true", "search.l1=null is not allowed: a value is required"),
    ("scheduler.name=plateau", "scheduler.name='plateau' is not allowed: set by the scheduler group: choose the "
     "option with scheduler=plateau"),
    ("augmentation.name=affine", "augmentation.name='affine' is not allowed: set by the augmentation group: choose "
     "the option with augmentation=affine"),
    # scheduler
    ("scheduler=step scheduler.gamma=-1", "scheduler.gamma=-1 is not allowed: a number in (0, 1]"),
    ("scheduler=step scheduler.gamma=nan", "scheduler.gamma=nan is not allowed: a number in (0, 1]"),
    ("scheduler=step scheduler.step_size=0", "scheduler.step_size=0 is not allowed: an integer >= 1"),
    ("scheduler=step scheduler.step_size=abc", "scheduler.step_size='abc' is not allowed: an integer >= 1"),
    ("scheduler=step scheduler.step_size=-3", "scheduler.step_size=-3 is not allowed: an integer >= 1"),
    ("scheduler=step", "scheduler.step_size=200 is not allowed: less than 2, the epochs after warmup"),
    ("scheduler=step scheduler.step_size=2", "scheduler.step_size=2 is not allowed: less than 2, the epochs after "
     "warmup: the lr first drops after step_size epochs"),
    ("scheduler=exponential scheduler.gamma=0", "scheduler.gamma=0 is not allowed: a number in (0, 1]"),
    ("scheduler=exponential scheduler.gamma=1.5", "scheduler.gamma=1.5 is not allowed: a number in (0, 1]"),
    ("scheduler=cosine scheduler.eta_min=-1", "scheduler.eta_min=-1 is not allowed: a number >= 0"),
    ("scheduler=cosine scheduler.eta_min=0.5", "scheduler.eta_min=0.5 is not allowed: at most the lr (0.001)"),
    ("scheduler=linear scheduler.end_factor=5", "scheduler.end_factor=5 is not allowed: a number in [0, 1]"),
    ("scheduler=onecycle scheduler.max_lr=nan", "scheduler.max_lr=nan is not allowed: null or a number in (0, 3.40282e+38]"),
    ("scheduler=onecycle scheduler.div_factor=0", "scheduler.div_factor=0 is not allowed: a number >= 1"),
    ("scheduler=onecycle scheduler.pct_start=null", "scheduler.pct_start=null is not allowed: a number in (0, 1)"),
    ("scheduler=onecycle scheduler.pct_start=1.0", "scheduler.pct_start=1.0 is not allowed: a number in (0, 1)"),
    ("scheduler=onecycle scheduler.warmup_epochs=1", "scheduler.warmup_epochs=1 is not allowed: 0 with "
     "scheduler=onecycle"),
    ("scheduler=onecycle optimizer=adagrad", "scheduler.cycle_momentum=true is not allowed: false with optimizer "
     "torch.optim.Adagrad: it has neither momentum nor betas"),
    ("scheduler=onecycle scheduler.anneal_strategy=step", "scheduler.anneal_strategy='step' is not allowed: one of "
     "cos, linear"),
    ("scheduler=onecycle scheduler.base_momentum=0.99", "scheduler.base_momentum=0.99 is not allowed: at most "
     "scheduler.max_momentum=0.95"),
    ("scheduler=cyclic scheduler.step_size_up_epochs=-1", "scheduler.step_size_up_epochs=-1 is not allowed: a number "
     "> 0"),
    ("scheduler=cyclic scheduler.step_size_up_epochs=abc", "scheduler.step_size_up_epochs='abc' is not allowed"),
    ("scheduler=cyclic scheduler.step_size_up_epochs=0.01", "scheduler.step_size_up_epochs=0.01 is not allowed: at "
     "least one optimizer step"),
    ("scheduler=cyclic scheduler.base_lr=-1", "scheduler.base_lr=-1 is not allowed: null or a number in (0, 3.40282e+38]"),
    ("scheduler=cyclic scheduler.base_lr=0.01", "scheduler.base_lr=0.01 is not allowed: less than the cycle's max_lr"),
    ("scheduler=cyclic scheduler.mode=sawtooth", "scheduler.mode='sawtooth' is not allowed: one of triangular,"),
    ("scheduler=cyclic scheduler.gamma=0.9", "scheduler.gamma=0.9 is not allowed: not set while scheduler.mode is not "
     "exp_range"),
    ("scheduler=plateau scheduler.monitor=test/loss", "scheduler.monitor='test/loss' is not allowed: val/acc or "
     "val/loss (a validation metric"),
    ("scheduler=plateau scheduler.monitor=null", "scheduler.monitor=null is not allowed: val/acc or val/loss"),
    ("scheduler=plateau scheduler.monitor=val/los", "scheduler.monitor='val/los' is not allowed: val/acc or val/loss"),
    ("scheduler=plateau scheduler.patience=-5", "scheduler.patience=-5 is not allowed: an integer >= 0"),
    ("scheduler=plateau scheduler.min_lr=-1", "scheduler.min_lr=-1 is not allowed: a number >= 0"),
    ("scheduler=plateau scheduler.factor=2", "scheduler.factor=2 is not allowed: a number in (0, 1)"),
    ("scheduler=plateau scheduler.min_lr=0.01", "scheduler.min_lr=0.01 is not allowed: less than the lr (0.001)"),
    ("scheduler.warmup_epochs=5", "scheduler.warmup_epochs=5 is not allowed: it must be fewer than trainer.epochs "
     "(2), so that the warmup ends before the run does"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs=-1 is not allowed: an integer >= 0"),
    ("scheduler.warmup_start_factor=0.5", "scheduler.warmup_start_factor=0.5 is not allowed: not set while "
     "scheduler.warmup_epochs=0"),
    ("scheduler.warmup_epochs=1 scheduler.warmup_start_factor=0", "scheduler.warmup_start_factor=0 is not allowed: "
     "a number in (0, 1]"),
    # augmentation
    ("augmentation=noise augmentation.p=1.5", "augmentation.p=1.5 is not allowed: a number in [0, 1]"),
    ("augmentation=noise augmentation.sigma=-1", "augmentation.sigma=-1 is not allowed: a number >= 0"),
    ("augmentation=noise augmentation.clamp=2", "augmentation.clamp=2 is not allowed: true or false"),
    ("augmentation=affine augmentation.scale=[1.2,0.8]", "augmentation.scale=[1.2, 0.8] is not allowed: [low, high]"),
    ("augmentation=affine augmentation.scale=0.9", "augmentation.scale=0.9 is not allowed: [low, high]"),
    ("augmentation=affine augmentation.translate=1", "augmentation.translate=1 is not allowed: a number in [0, 1)"),
    ("augmentation=affine augmentation.degrees=400", "augmentation.degrees=400 is not allowed: a number in [0, 180]"),
    ("augmentation=affine augmentation.shear=95", "augmentation.shear=95 is not allowed: a number in [0, 90)"),
    # logging
    ("logging.histograms=-1", "logging.histograms=-1 is not allowed: an integer >= 0"),
    ("logging.probe_size=0", "logging.probe_size=0 is not allowed: an integer >= 1"),
    ("logging.progress=maybe", "logging.progress='maybe' is not allowed: one of auto, true, false"),
    ("logging.tensorboard=0", "logging.tensorboard=0 is not allowed: true or false"),
    ("logging.tensorboard=false logging.histograms=5", "logging.histograms=5 is not allowed: not set while "
     "logging.tensorboard=false"),
    # Hydra's own: composition and grammar errors, made one line too
    ("model=resnet", f"model=resnet is not allowed: one of {', '.join(options('model'))}"),
    ("optimizer=lbfgs", "optimizer=lbfgs is not allowed: one of adagrad, adam,"),
    ("reg.l3=1", "reg.l3=1 is not allowed: the config has no key reg.l3"),
    # a typo without + gets the nearest key, as one with + does
    ("model.dropuot=0.5", "model.dropuot=0.5 is not allowed: the config has no key model.dropuot (did you mean "
     "model.dropout?)"),
    ("modle.depth=2", "modle.depth=2 is not allowed: the config has no key modle.depth (did you mean model.depth?)"),
    ("optimiser=sgd", "optimiser=sgd is not allowed: the config has no key optimiser (did you mean optimizer?)"),
    ("trainer.early_stoping.patience=3", "(did you mean trainer.early_stopping.patience?)"),
    ("scheduler.step_size=1", "scheduler.step_size=1 is not allowed: the config has no key scheduler.step_size; the "
     "scheduler options that have it: scheduler=step"),
    ("model.norm=batchnorm,layernorm", "Ambiguous value for argument 'model.norm=batchnorm,layernorm'"),
    ("reg.l2=[1,2", "no viable alternative at input '[1,2'"),
]

# multiruns: nothing trains, and the sweep folder is not made
MULTIRUN_CASES = [
    ("model.dropout=0.1,1.5", "job 1 (", "model.dropout=1.5 is not allowed: a number in [0, 1)"),
    ("model.norm=none,batchnorm +model.foo=1", "model.foo=1 is not allowed: model has no key 'foo'"),
    ("model.norm=none,batchnorm hydra.sweeper.max_batch_size=0", "hydra.sweeper.max_batch_size=0 is not allowed: "
     "null or an integer >= 1"),
    ("hparams_search=quick hydra.sweeper.n_trials=-1", "hydra.sweeper.n_trials=-1 is not allowed: an integer >= 1"),
    ("hparams_search=quick hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 is not allowed: an integer >= 1"),
    ("hparams_search=quick hydra.sweeper.storage=notadb://x", "hydra.sweeper.storage='notadb://x' is not allowed: a "
     "database SQLAlchemy knows"),
    ("hparams_search=quick hydra.sweeper.storage=postgresql://u@localhost/db", "is not allowed: a URL whose database "
     "driver is installed: postgresql needs the Python module psycopg"),
    # a password in the URL is never shown
    ("hparams_search=quick hydra.sweeper.storage=postgresql://u:hunter2@localhost/db", "hydra.sweeper.storage="
     "'postgresql://u:***@localhost/db' is not allowed: a URL whose database driver is installed"),
    ("hparams_search=quick data.val_size=null hydra.sweeper.storage=postgresql+psycopg2://u:hunter2@127.0.0.1:1/db",
     "hydra.sweeper.storage='postgresql+psycopg2://u:***@127.0.0.1:1/db' is not allowed: a URL whose password is not "
     "written in it: Hydra saves the URL as written in every folder's .hydra/ files"),
    # from the environment (${oc.env:...}, here its default): saved unresolved, shown masked once resolved
    ("hparams_search=quick data.val_size=null hydra.sweeper.storage=postgresql+psycopg2://u:${oc.env:NO_SUCH_VAR,"
     "hunter2}@127.0.0.1:1/db", "hydra.sweeper.storage='postgresql+psycopg2://u:***@127.0.0.1:1/db': the study 'quick' "
     "cannot be opened"),
    ("hparams_search=quick data.val_size=null hydra.sweeper.storage=sqlite:////no/such/folder/study.db",
     "hydra.sweeper.storage='sqlite:////no/such/folder/study.db': the folder /no/such/folder does not exist; create it "
     "first, or keep the database in the sweep folder"),
    ("hparams_search=quick hydra.sweeper.study_name='a\x07b'", "hydra.sweeper.study_name='a\\x07b' is not allowed: a "
     "non-empty name of printable characters"),
    ("hparams_search=quick hydra.sweeper.sampler.seed=-5", "hydra.sweeper.sampler.seed=-5 is not allowed: null or an "
     "integer in [0, "),
    ("hparams_search=quick hydra.sweeper.direction=minimize", "hydra.sweeper.direction='minimize' is not allowed: "
     "maximize, as objective=val/acc is maximized"),
    ("hparams_search=quick objective=val/loss hydra.sweeper.direction=maximize", "hydra.sweeper.direction='maximize' "
     "is not allowed: minimize, as objective=val/loss is minimized"),
    ("hparams_search=quick +hydra.sweeper.max_failure_rate=0.5", "hydra.sweeper.max_failure_rate=0.5 is not allowed: "
     "hydra.sweeper has no key 'max_failure_rate'"),
    ("hparams_search=quick hydra/launcher=slurm", "hydra/launcher=slurm submits jobs with SLURM's sbatch, which this "
     "machine does not have"),
    ("hparams_search=quick hydra/launcher=joblib hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs=0 is not allowed: "
     "a number of worker processes >= 1"),
    ("hparams_search=quick objective=test/acc", "objective='test/acc' is not allowed: val/acc or val/loss"),
    ("hparams_search=quick model.width=0", "model.width=0 is not allowed: an integer >= 1"),
    ("hparams_search=quick", "every trial would be refused: data.val_size=10000 is not allowed: at most 400"),
    ("hparams_search=quick data.val_size=null search.dropout=true model.dropout=0", "every trial would be refused: "
     "model.dropout=0.0 is not allowed: > 0 while search.dropout=true"),
    ("hparams_search=quick hydra.sweeper.custom_search_space=os.system", "hydra.sweeper.custom_search_space="
     "'os.system' is not allowed: null or a function (cfg, trial) in reg_runner"),
    ("hparams_search=quick data.val_size=null +hydra.sweeper.params.model.width=abc", "model.width='abc' is not "
     "allowed: an integer >= 1"),
    ("seed=0,1 hydra.job.name=x/y", "hydra.job.name='x/y' is not allowed: a name of letters, digits"),
    ("hparams_search=quick data.val_size=null optimizer.lr=interval(0.1,0.01)", "a sweep override cannot be searched"),
    # a searched range is checked at its ends before any trial: not run where it is valid, refused where not
    ("hparams_search=quick data.val_size=null model.dropout=interval(0.5,1.5)", "model.dropout=interval(0.5,1.5) is "
     "not allowed: its upper end 1.5 is not a number in [0, 1)"),
    ("hparams_search=quick data.val_size=null model.width=int(interval(0,10))", "model.width=int(interval(0,10)) is "
     "not allowed: its lower end 0 is not an integer >= 1"),
    ("hparams_search=quick data.val_size=null augmentation=choice(none,noize)", "augmentation=noize is not allowed: one of "),
    ("hparams_search=quick +hydra.sweeper.sampler.bogus=1", "hydra.sweeper.sampler.bogus=1 is not allowed: "
     "TPESampler takes no argument 'bogus'"),
    ("hparams_search=quick hydra.sweeper.sampler._target_=os.system", "hydra.sweeper.sampler._target_='os.system' is "
     "not allowed: an Optuna sampler"),
    ("hparams_search=quick hydra.sweeper.n_trial=3", "hydra.sweeper.n_trial=3 is not allowed: the config has no key "
     "hydra.sweeper.n_trial (did you mean hydra.sweeper.n_trials?)"),
    ("seed=0,1 hydra/launcher=joblib +hydra.launcher.n_job=2", "hydra.launcher.n_job=2 is not allowed: "
     "hydra.launcher has no key 'n_job' (did you mean n_jobs?)"),
    ("seed=0,1 hydra/launcher=joblib hydra.launcher.backend=threading", "hydra.launcher.backend='threading' is not "
     "allowed: loky or multiprocessing"),
    ("seed=range(0,2,0)", "the sweep cannot be made: range() arg 3 must not be zero"),
    ("seed=interval(0,1)", "the sweep cannot be made: seed=interval(0,1) is an interval, which a grid cannot list"),
    ("seed=range(0,1000000000)", "the sweep makes more than 10,000 jobs"),
    ("seed=range(3,0)", "seed=range(3,0) sweeps no value: the sweep would make no job"),
    ("model.width=10,10", "model.width=10,10 lists 10 more than once"),
    # pruning and seeds per trial: settings that cannot work together
    ("hparams_search=quick hydra/sweeper/pruner=median hydra/launcher=joblib hydra.sweeper.storage=null",
     "hydra.sweeper.storage=null is not allowed: a database URL (sqlite:///...) to prune with JoblibLauncher"),
    ("hparams_search=quick hydra/sweeper/pruner=median hydra.sweeper.seeds_per_trial=3",
     "hydra.sweeper.seeds_per_trial=3 is not allowed: 1 to prune with BasicLauncher; with hydra/launcher=stacked"),
    ("hparams_search=quick hydra/sweeper/pruner=percentile hydra.sweeper.pruner.percentile=120",
     "arguments PercentilePruner accepts (ValueError: Percentile must be between 0 and 100"),
    ("hparams_search=quick hydra/sweeper/pruner=median +hydra.sweeper.pruner.patience=3",
     "hydra.sweeper.pruner.patience=3 is not allowed: MedianPruner takes no argument 'patience'"),
    ("hparams_search=quick hydra.sweeper.pruner._target_=os.system",
     "hydra.sweeper.pruner._target_='os.system' is not allowed: an Optuna pruner (optuna.pruners.*)"),
    ("hparams_search=quick hydra.sweeper.seeds_per_trial=3 seed=null",
     "seed=null is not allowed: a number with hydra.sweeper.seeds_per_trial=3"),
    ("hparams_search=quick hydra.sweeper.seeds_per_trial=3 hydra/launcher=stacked hydra.launcher.max_members=2",
     "hydra.sweeper.seeds_per_trial=3 is not allowed: at most hydra.launcher.max_members=2"),
    ("hparams_search=quick hydra/launcher=stacked hydra.launcher.only_if_faster=maybe",
     "hydra.launcher.only_if_faster='maybe' is not allowed: true or false"),
    # a pruner's settings against what it will do with these runs (2 epochs) and trials (8, in batches of 2)
    ("hparams_search=quick hydra/sweeper/pruner=hyperband hydra.sweeper.pruner.min_resource=1 "
     "hydra.sweeper.pruner.max_resource=0", "hydra.sweeper.pruner.max_resource=0 is not allowed: auto or an integer "
     ">= 1 (hydra.sweeper.pruner.min_resource=1)"),
    ("hparams_search=quick hydra/sweeper/pruner=hyperband hydra.sweeper.pruner.min_resource=1 "
     "hydra.sweeper.pruner.reduction_factor=1", "hydra.sweeper.pruner.reduction_factor=1 is not allowed: an integer "
     ">= 2"),
    ("hparams_search=quick hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.min_resource=10 is not allowed: at "
     "most 1, the last step a run can be pruned at (trainer.epochs=2)"),
    ("hparams_search=quick hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=10 is not allowed: at "
     "most 1, the last step a run can be pruned at"),
    ("hparams_search=quick hydra/sweeper/pruner=median hydra.sweeper.pruner.n_warmup_steps=0 hydra.sweeper.n_trials=2",
     "hydra.sweeper.pruner._target_='optuna.pruners.MedianPruner' is not allowed: a pruner that compares with trials "
     "that have finished"),
    # a count of steps or trials is an integer: 0.5 is neither rounded nor passed on to Optuna, which takes it
    ("hparams_search=quick hydra/sweeper/pruner=median hydra.sweeper.pruner.n_warmup_steps=0.5",
     "hydra.sweeper.pruner.n_warmup_steps=0.5 is not allowed: an integer >= 0"),
    ("hparams_search=quick hydra/sweeper/pruner=median hydra.sweeper.pruner.n_warmup_steps=0 "
     "hydra.sweeper.pruner.n_startup_trials=2.0", "hydra.sweeper.pruner.n_startup_trials=2.0 is not allowed: an "
     "integer >= 0"),
    ("hparams_search=quick hydra/sweeper/pruner=median hydra.sweeper.pruner.interval_steps=1.5",
     "hydra.sweeper.pruner.interval_steps=1.5 is not allowed: an integer >= 1"),
    ("hparams_search=quick hydra/sweeper/pruner=hyperband hydra.sweeper.pruner.min_resource=1.5",
     "hydra.sweeper.pruner.min_resource=1.5 is not allowed: an integer >= 1"),
    ("hparams_search=quick hydra.sweeper.pruner._target_=optuna.pruners.WilcoxonPruner "
     "+hydra.sweeper.pruner.n_startup_steps=0.5", "hydra.sweeper.pruner.n_startup_steps=0.5 is not allowed: an "
     "integer >= 0"),
    ("hparams_search=quick hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=10 is not "
     "allowed: a first rung"),
    ("hparams_search=quick hydra.sweeper.pruner._target_=optuna.pruners.PatientPruner "
     "+hydra.sweeper.pruner.wrapped_pruner=null +hydra.sweeper.pruner.patience=1", "is not allowed: a pruner that "
     "compares trials: a trial reports its best value so far, which never gets worse"),
    ("hparams_search=quick hydra.sweeper.pruner._target_=optuna.pruners.BasePruner",
     "hydra.sweeper.pruner._target_='optuna.pruners.BasePruner' is not allowed: an Optuna pruner that exists"),
    ("optimizer=adam,lbfgs", "job 1 (optimizer=lbfgs): optimizer=lbfgs is not allowed: one of adagrad, adam"),
    ("--cfg job", "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"),
]


@pytest.fixture(autouse=True)
def _md5s_remembered_here(tmp_path, monkeypatch):
    """The md5s of checked data folders are remembered in this test's store, not the user's."""
    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "datamaestro"))


def assert_one_line_error(proc, expected: str):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def rejection(overrides: list[str], data_root) -> str | None:
    """The message the run's checks give ``overrides`` (Hydra's compose, then every stage of
    ``config.check``), in this process; None if they pass."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reg_runner.errors import CONFIG_DIR, hydra_error
    from reg_runner.checks import check
    from reg_runner.errors import UserError

    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    own = [f"data.root={data_root}", *TINY]
    full = [*(t for t in own if t.split("=", 1)[0] not in given), *overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        try:
            cfg = compose("config", overrides=full)
        except Exception as e:  # Hydra's own: the CLI turns its report into one line the same way
            return hydra_error(e, full)
        try:
            check(cfg, overrides)
        except UserError as e:
            return str(e)
    return None


# The real CLI in a subprocess once per kind of refusal (a config check, a key the config lacks, Hydra's composition
# and grammar errors, a job name, a data folder, a key given twice): a refused config becomes one line, exit 2, and no
# folder (by default through the CLI's entry point in this process, REG_RUNNER_TEST_CLI=subprocess: in a process of
# its own). Every other case goes through the CLI's entry point in this process (``cli(in_process=True)``: the same
# ``reg_runner.cli.entry``, Hydra, callbacks and checks, without an interpreter's start-up for each).
REAL_CLI = ["model.dropout=1.0", "+foo=bar", "model.dropuot=0.5", "model=resnet", "reg.l2=[1,2",
            "model.norm=batchnorm,layernorm", "hydra.job.name=", "data=cifar10", "scheduler.warmup_epochs=5"]
REAL_CLI_CASES = [c for c in CONFIG_CASES if c[0] in REAL_CLI]
assert len(REAL_CLI_CASES) == len(REAL_CLI)
OTHER_CASES = [c for c in CONFIG_CASES if c[0] not in REAL_CLI]


@pytest.mark.parametrize("overrides,expected", REAL_CLI_CASES, ids=[c[0] for c in REAL_CLI_CASES])
def test_bad_value_real_cli(cli, overrides, expected):
    proc = cli(*overrides.split(), check=False)
    assert_one_line_error(proc, expected)
    assert not proc.run_dir.exists()  # not even Hydra's .hydra/: the checks run before any folder is made


class TestConfigA:  # two classes: xdist spreads them over its two workers
    @pytest.mark.parametrize("overrides,expected", OTHER_CASES[::2], ids=[c[0] for c in OTHER_CASES[::2]])
    def test_bad_value(self, cli, overrides, expected):
        proc = cli(*overrides.split(), check=False, in_process=True)
        assert_one_line_error(proc, expected)
        assert not proc.run_dir.exists()  # not even Hydra's .hydra/: the checks run before any folder is made


class TestConfigB:
    @pytest.mark.parametrize("overrides,expected", OTHER_CASES[1::2], ids=[c[0] for c in OTHER_CASES[1::2]])
    def test_bad_value(self, cli, overrides, expected):
        proc = cli(*overrides.split(), check=False, in_process=True)
        assert_one_line_error(proc, expected)
        assert not proc.run_dir.exists()


# The real CLI once per kind of a multirun's refusal: a job the sweeper refuses, the sweeper's own settings, a
# study's trials all refused, a grid that cannot be made, a pruner against the runs, Hydra's own (a group option,
# its argument rules); every other case in this process.
REAL_MULTIRUN = ["model.dropout=0.1,1.5", "hparams_search=quick hydra.sweeper.n_trials=-1", "hparams_search=quick",
                 "seed=range(0,2,0)", "hparams_search=quick hydra/sweeper/pruner=median", "optimizer=adam,lbfgs",
                 "--cfg job"]
REAL_MULTIRUN_CASES = [c for c in MULTIRUN_CASES if c[0] in REAL_MULTIRUN]
assert len(REAL_MULTIRUN_CASES) == len(REAL_MULTIRUN)
OTHER_MULTIRUN_CASES = [c for c in MULTIRUN_CASES if c[0] not in REAL_MULTIRUN]


def check_bad_sweep(proc, expected):
    assert_one_line_error(proc, expected[-1])
    assert "hunter2" not in proc.stdout + proc.stderr  # the cases' one password
    assert all(part in proc.stderr for part in expected)
    assert not proc.run_dir.exists()  # nothing trained, no sweep folder, no study


@pytest.mark.parametrize("case", REAL_MULTIRUN_CASES, ids=[c[0] for c in REAL_MULTIRUN_CASES])
def test_bad_sweep_real_cli(cli, case):
    overrides, *expected = case
    check_bad_sweep(cli("--multirun", *overrides.split(), check=False), expected)


class TestMultirun:
    @pytest.mark.parametrize("case", OTHER_MULTIRUN_CASES, ids=[c[0] for c in OTHER_MULTIRUN_CASES])
    def test_bad_sweep(self, cli, case):
        overrides, *expected = case
        check_bad_sweep(cli("--multirun", *overrides.split(), check=False, in_process=True), expected)


# a user's own network, checked at the family seam before anything is made: a family (ModelFamily) or a plain
# nn.Module (tests/families/broken.py and lenet.py)
FAMILIES = ROOT / "tests" / "families"
BROKEN = FAMILIES / "broken.py"
FAMILY_CASES = [
    ("broken.Raises", f"model._target_='broken.Raises': building its network raised ValueError: no such layer at "
     f"{BROKEN}:11"),
    ("broken.CheckRaises", f"model._target_='broken.CheckRaises': checking it against the data raised KeyError: "
     f"(1, 8, 8) at {BROKEN}:16"),
    ("broken.NotAModule", "model._target_='broken.NotAModule' is not allowed: a family whose network is a "
     "torch.nn.Module (its plain() returns builtins.list)"),
    ("broken.NoParameters", "model._target_='broken.NoParameters' is not allowed: a network with parameters to "
     "train (it has none)"),
    ("broken.ThreeClasses", "model._target_='broken.ThreeClasses' is not allowed: a network whose output is (batch, "
     "classes), (25, 10) for a batch of 25 of these 10 classes (its output: (25, 3))"),
    ("broken.ForwardRaises", f"model._target_='broken.ForwardRaises': running its network raised RuntimeError: "),
    ("broken.Lazy", "model._target_='broken.Lazy' is not allowed: a network whose parameters have their shapes once "
     "it is built, which a checkpoint and a stack need (it has lazy modules)"),
    ("lenet.LeNet5 +model.depth=3", "model.depth=3 is not allowed: an argument of lenet.LeNet5, which takes no 'depth' "
     "(its arguments: width, dropout; the data sets in_channels, num_classes)"),
    ("lenet.LeNet5 +model.width=2.5", "model.width=2.5 is not allowed: a value of type int, as LeNet5(width: int) "
     "declares it"),
    ("lenet.LeNet5 +model.num_classes=10", "model.num_classes=10 is not allowed: left out: the data sets it (its "
     "classes)"),
    ("torch.nn.Linear", "model.in_features=null is not allowed: a value: Linear's in_features has no default"),
    ("lenet.LeNet5BN trainer.batch_size=1", "trainer.batch_size=1 is not allowed: a size that leaves no batch of 1 "
     "image with lenet.LeNet5BN's BatchNorm"),
    ("broken.LongOutput", "model._target_='broken.LongOutput' is not allowed: a network whose output is floating-point "
     "scores computed from its parameters, which a loss can train (its output: torch.int64)"),
    ("broken.Detached", "model._target_='broken.Detached' is not allowed: a network whose output is floating-point "
     "scores computed from its parameters, which a loss can train (its output: torch.float32, with no gradient: "
     "detached from them)"),
    ("broken.Frozen", "model._target_='broken.Frozen' is not allowed: a network with parameters to train (it has none "
     "that requires a gradient)"),
    ("broken.Exits", f"model._target_='broken.Exits': building its network raised SystemExit: 3 at {BROKEN}:87"),
    ("broken.ParameterInForward", "model._target_='broken.ParameterInForward' is not allowed: a network whose "
     "parameters are made before its forward, which the optimizer is given (its forward made new ones"),
    ("broken.PlainTensor", "model._target_='broken.PlainTensor' is not allowed: a network whose tensors are "
     "parameters or buffers, which .to(device), a checkpoint and a stack carry (its fc.2.scale is a plain attribute: "
     "self.register_buffer(name, tensor, persistent=False) keeps it out of the checkpoint)"),
    ("broken.WeightNormed", "model._target_='broken.WeightNormed' is not allowed: a network whose layers' weights are "
     "parameters, which L1/L2, the histograms and the landscapes act on (its fc.2 is computed, as by a "
     "parametrization such as weight_norm)"),
    ("broken.CheckReturns", "model._target_='broken.CheckReturns' is not allowed: a family whose check() raises "
     "ConfigError to refuse and returns None (it returned 'needs 28x28 images')"),
]


@pytest.mark.parametrize("target,expected", FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_a_users_network_is_checked_before_anything_is_made(tiny_data, monkeypatch, target, expected):
    monkeypatch.syspath_prepend(str(FAMILIES))
    message = rejection(["~model", f"+model._target_={target.split()[0]}", *target.split()[1:]], tiny_data)
    assert message is not None and expected in message and "\n" not in message, message
    if target == "broken.ForwardRaises":  # the user's line, not torch's
        assert message.endswith(f"at {BROKEN}:47"), message


@pytest.mark.parametrize("stacked", [False, True], ids=["lone", "stacked"])
def test_a_broken_network_stops_the_command_in_one_line_before_any_folder(cli, monkeypatch, stacked):
    monkeypatch.syspath_prepend(str(FAMILIES))
    sweep = ["--multirun", "seed=0,1", "hydra/launcher=stacked"] if stacked else []
    proc = cli(*sweep, "~model", "+model._target_=broken.ThreeClasses", check=False, in_process=True)
    assert_one_line_error(proc, "(its output: (25, 3))")
    assert not proc.run_dir.exists()


def test_hydra_full_error_shows_the_users_traceback(cli, monkeypatch):
    monkeypatch.syspath_prepend(str(FAMILIES))
    proc = cli("~model", "+model._target_=broken.Raises", check=False, in_process=True, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 2 and f'File "{BROKEN}", line 11, in plain' in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model._target_='broken.Raises': building its ")
    assert not proc.run_dir.exists()


# memory is the whole footprint: parameters, gradients, optimizer state and a batch's activations, against a machine
# of 8 GiB; the refusal names the key that sizes what is too big (MNIST's 28x28 images in batches of 300)
MEMORY_CASES = [
    # 164 million parameters take 4.9 GiB with Adam's state and the copies: the activations of 4096 channels are what
    # is too big
    ("model=cnn model.channels=[4096,4096]", "model.channels=[4096, 4096] is not allowed: a smaller value: this model "
     "has 1.64e+08 parameters and the run needs about"),
    ("model=cnn model.hidden=1000000", "model.hidden=1000000 is not allowed: a smaller value: this model has 1.58e+09 "
     "parameters"),
    ("model.width=100000", "model.width=100000 is not allowed: a smaller value: this model has 2.01e+10 parameters"),
]


@pytest.mark.parametrize("overrides,expected", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_memory_is_the_whole_footprint_and_its_refusal_names_the_key_that_sizes_it(tmp_path, monkeypatch, overrides,
                                                                                    expected):
    from conftest import CLI

    from reg_runner import checks

    monkeypatch.setattr(checks, "memory_bytes", lambda: 8 * 2**30)
    cli = CLI(tmp_path, make_tiny_mnist(tmp_path / "data", side=28))
    proc = cli(*overrides.split(), "data.train_fraction=0.6", "trainer.batch_size=300", check=False, in_process=True)
    assert_one_line_error(proc, expected)
    assert "more than this machine's 8 GiB" in proc.stderr and not proc.run_dir.exists()


def test_a_stack_needs_each_members_footprint_and_its_refusal_names_max_members(tiny_data, monkeypatch):
    """Each run fits alone; a stack (hydra/launcher=stacked) keeps every member's parameters, gradients, optimizer
    state and activations: on a machine of 2.5 runs, a stack of 2 fits and one of 3 is refused, naming the key that
    sizes it and how many fit."""
    from test_check_once import composed

    from reg_runner import checks
    from reg_runner.errors import ConfigError
    from reg_runner.model import dry_run

    checked = checks.check(composed(tiny_data, "model.width=1000", "optimizer=adam", "trainer.eval_batch_size=100"),
                           through=3)
    c, split = checked.cfg, checked.split
    lone = dry_run.footprint(c.model, split.shape, split.n_classes, c.trainer.batch_size, c.trainer.eval_batch_size,
                             copies=4 + 2 * 2)
    # the weights, their gradients, the best epoch's copy, Adam's 2 moments; the weights and moments as the epoch began
    monkeypatch.setattr(checks, "memory_bytes", lambda: int(2.5 * lone.total))
    checked = checks.carry_on(checked)  # alone, it fits
    checks.stack_fits([checked] * 2, 64)
    with pytest.raises(ConfigError) as refused:
        checks.stack_fits([checked] * 3, 64)
    assert str(refused.value).startswith("hydra.launcher.max_members=64 is not allowed: at most 2 here: a stack of 3 "
                                         f"of these runs needs about {3 * lone.total / 2**30:.3g} GiB")


def test_hydra_full_error_keeps_hydras_own_report(cli):
    cli.env["HYDRA_FULL_ERROR"] = "1"
    proc = cli("model=resnet", check=False, in_process=False)  # Hydra's report, as the real CLI prints it
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "Config search path" in proc.stderr


def test_cuda_when_there_is_none(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(cli("trainer.device=cuda", check=False),
                          "trainer.device='cuda' is not allowed: auto or cpu: CUDA is not available on this machine")


def test_torchvision_augmentation_without_torchvision(cli):
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision imports here")
    except Exception:
        pass
    proc = cli("augmentation=torchvision", check=False)
    assert_one_line_error(proc, "augmentation=torchvision needs torchvision, which cannot be imported here")
    assert not proc.run_dir.exists()


@pytest.mark.parametrize("overrides,expected", [
    ("hydra.sweep.dir=elsewhere", "hydra.sweep.dir='elsewhere' is not allowed: not read by a single run, which has no "
     "sweep, sweeper or launcher: add --multirun (its folder is hydra.sweep.dir)"),
    ("hydra/launcher=stacked", "hydra/launcher='stacked' is not allowed: not read by a single run"),
    ("hydra.runtime.output_dir=/tmp/x", "hydra.runtime.output_dir='/tmp/x' is not allowed: set by Hydra"),
    ("hydra.job.name=a hydra.job.name=b", "hydra.job.name='b' is not allowed: one value: it is given twice"),
    ("--multirun seed=0,1 hydra.run.dir=elsewhere", "hydra.run.dir='elsewhere' is not allowed: not read by a "
     "--multirun: its folder is hydra.sweep.dir"),
])
def test_hydras_keys_this_mode_would_not_read(cli, tmp_path, overrides, expected):
    # Hydra itself ignores them silently: the run would go to another folder than the one typed, or search nothing
    # the first case in a subprocess, the others through the entry point in this process
    proc = cli(*overrides.split(), check=False, in_process=not overrides.startswith("hydra.sweep.dir="))
    assert_one_line_error(proc, expected)
    assert not any(tmp_path.glob("run*")) and not (tmp_path / "outputs").exists()
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_empty_output_folder(cli, tmp_path, key):
    multirun = ["--multirun"] if key == "hydra.sweep.dir" else []
    proc = cli(*multirun, run_dir="", check=False, in_process=bool(multirun))
    assert_one_line_error(proc, f"{key}='' is not allowed: a folder path")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written into the current folder


def test_output_folder_the_file_system_refuses(cli, tmp_path):
    assert_one_line_error(cli(run_dir=tmp_path / ("x" * 300), check=False), "cannot be created: File name too long")
    assert_one_line_error(cli(run_dir="/proc/reg_runner_test", check=False, in_process=True), "hydra.run.dir='/proc/reg_runner_test' "
                                                                            "cannot be created")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert_one_line_error(cli(run_dir=tmp_path / "dangling", check=False, in_process=True), "is a link to nothing")


def test_output_folder_under_a_file_or_among_other_files(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert_one_line_error(cli(run_dir=blocker / "run", check=False, in_process=True), "cannot be created: ")
    with pytest.raises(UserError, match="is a file, not a folder; choose a folder"):  # a sweep's job folder
        RunFolder(blocker).refuse_existing("hydra.sweep.dir")
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    assert_one_line_error(cli(run_dir=crowded, check=False), "already holds other files (notes.txt)")
    assert sorted(p.name for p in crowded.iterdir()) == ["notes.txt"]
    odd = tmp_path / "odd"  # a folder where the run's marker would go: not a run's, not touched
    (odd / ".reg_runner.json").mkdir(parents=True)
    assert_one_line_error(cli(run_dir=odd, check=False, in_process=True), "already holds other files (.reg_runner.json)")
    assert sorted(p.name for p in odd.iterdir()) == [".reg_runner.json"]


def _data_folder(tmp_path, name):
    return make_tiny_mnist(tmp_path / name, n_train=50, n_test=20)


def test_missing_data_folder(cli, tmp_path):
    proc = cli(f"data.root={tmp_path / 'nowhere'}", check=False)
    assert_one_line_error(proc, f"data.root='{tmp_path / 'nowhere'}' is not a folder; give data.root=")
    assert not proc.run_dir.exists()


def test_missing_file(cli, tmp_path):
    folder = _data_folder(tmp_path, "missing")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert_one_line_error(cli(f"data.root={folder}", check=False, in_process=True), "lacks t10k-labels-idx1-ubyte (.gz or not)")


def test_wrong_magic(cli, tmp_path):
    folder = _data_folder(tmp_path, "magic")
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"<html>not found</html>")
    assert_one_line_error(cli(f"data.root={folder}", check=False, in_process=True), "is not an IDX file (wrong magic number")


def test_truncated_file(cli, tmp_path):
    folder = _data_folder(tmp_path, "truncated")
    raw = gzip.open(folder / "train-images-idx3-ubyte.gz").read()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[:-100])  # uncompressed, cut short
    assert_one_line_error(cli(f"data.root={folder}", check=False, in_process=True), "is truncated or corrupt")


def test_truncated_gzip(cli, tmp_path):
    folder = _data_folder(tmp_path, "truncated_gz")
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    assert_one_line_error(cli(f"data.root={folder}", check=False, in_process=True), "cannot read")


def test_labels_out_of_range(cli, tmp_path):
    folder = _data_folder(tmp_path, "labels")
    idx.write(folder / "train-labels-idx1-ubyte.gz", np.full(50, 12, dtype=np.uint8))
    assert_one_line_error(cli(f"data.root={folder}", check=False, in_process=True), "train label 12 out of range; labels must be 0-9")


def test_label_count_mismatch(cli, tmp_path):
    folder = _data_folder(tmp_path, "count")
    idx.write(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    assert_one_line_error(cli(f"data.root={folder}", check=False, in_process=True), "20 test images but labels of shape (7,)")


def test_images_without_variance(cli, tmp_path):
    folder = _data_folder(tmp_path, "flat")
    idx.write(folder / "train-images-idx3-ubyte.gz", np.full((50, 8, 8), 7, dtype=np.uint8))
    proc = cli(f"data.root={folder}", "trainer.batch_size=5", check=False, in_process=True)
    assert_one_line_error(proc, "data.normalize=true is not allowed: false for these images: the 10 training images "
                                "all have one pixel value (std 0)")
    assert read_ok(cli(f"data.root={folder}", "trainer.batch_size=5", "data.normalize=false"))  # and without, it trains


def test_a_colour_channel_without_variance(cli, tmp_path):
    """One channel of one value (not 0) among channels that vary: refused by its pixels, not by a std that rounding
    leaves near 1e-17, which standardizing would divide by."""
    import pickle

    from conftest import make_tiny_cifar

    folder = make_tiny_cifar(tmp_path / "c") / "cifar-10-batches-py"
    for batch in folder.iterdir():
        raw = pickle.loads(batch.read_bytes())
        raw[b"data"][:, 1024:2048] = 77  # the green plane
        batch.write_bytes(pickle.dumps(raw, protocol=2))
    proc = cli("data=cifar10", f"data.root={folder.parent}", "trainer.batch_size=5", check=False, in_process=True)
    assert_one_line_error(proc, "data.normalize=true is not allowed: false for these images: channel 1 of the 20 "
                                "training images has one value (std 0)")


def read_ok(proc) -> bool:
    return proc.returncode == 0 and (proc.run_dir / "metrics.json").exists()


def test_a_value_fixed_on_the_command_line_wins_over_the_search_space(cli):
    """Not an error: optimizer.lr fixed while the space searches it; every trial uses the fixed value."""
    import optuna

    proc = cli("--multirun", "hparams_search=quick", "data.val_size=null", "optimizer.lr=0.01",
               "hydra.sweeper.n_trials=2", "trainer.epochs=1")
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{proc.run_dir / 'study.db'}")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert all("optimizer.lr" not in t.params for t in study.trials)
    import yaml

    for run in (p for p in proc.run_dir.iterdir() if p.is_dir() and p.name != "artifacts"):  # artifacts: Optuna's
        assert yaml.safe_load((run / "resolved_config.yaml").read_text())["optimizer"]["lr"] == 0.01


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_preset_passes_the_checks(tiny_data, preset):
    assert rejection([f"+experiment={preset}", "data.val_size=100"], tiny_data) is None


def test_hydra_full_error_shows_the_traceback_and_leaves_no_folder(cli):
    """Hydra lets an exception of a callback through as a warning and makes the run's folder anyway: the
    refusal ends the command all the same, its traceback shown."""
    cli.env["HYDRA_FULL_ERROR"] = "1"
    proc = cli("model.dropout=2", check=False)
    assert proc.returncode == 2 and "Traceback" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: model.dropout=2 is not allowed: a number in [0, 1)"
    assert not proc.run_dir.exists()


def test_a_study_database_that_is_another_file_is_refused(cli, tmp_path):
    """SQLite would take the file over as the study's database."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    proc = cli("--multirun", "hparams_search=quick", "data.val_size=null", f"hydra.sweeper.storage=sqlite:///{notes}",
               check=False)
    assert_one_line_error(proc, f"is not allowed: an SQLite database file: {notes} holds something else")
    assert notes.read_text() == "mine" and not proc.run_dir.exists()


def test_a_study_created_for_the_other_direction_is_refused(cli, tmp_path):
    """A study made beforehand (optuna create-study, as for PostgreSQL) to minimize, searched to maximize val/acc:
    its sampler would seek the worst trials."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'made.db'}"
    optuna.create_study(study_name="quick", storage=storage, direction="minimize")
    proc = cli("--multirun", "hparams_search=quick", "data.val_size=null", f"hydra.sweeper.storage={storage}",
               check=False, in_process=True)
    assert_one_line_error(proc, "the study 'quick' was created to minimize; this command's objective is to maximize")
    assert not proc.run_dir.exists() and optuna.load_study(study_name="quick", storage=storage).trials == []


def test_a_refused_command_imports_neither_torch_nor_numpy_nor_what_only_a_sweep_needs(tmp_path):
    """The refusal path's start-up: Hydra, the schemas and the checks, nothing that trains or searches (a refusal
    then costs less than 2.5 times ``python -c "import hydra, omegaconf"``: benchmarks/refusal.py). A key Hydra's
    composition refuses (misspelled, an option that does not exist) loads no schema at all: not even pydantic."""
    import subprocess
    import sys

    def imports(override: str, expected: str) -> set:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "reg_runner", override,
                               f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and f"error: {override} is not allowed: {expected}" in proc.stderr, proc.stderr
        return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}

    imported = imports("model.dropout=2", "a number in [0, 1)")
    assert "reg_runner.config" in imported and "hydra" in imported  # what the refusal does need
    heavy = {"torch", "numpy", "optuna", "sqlalchemy", "joblib", "reg_runner.run", "reg_runner.sweep.study",
             "reg_runner.sweep.settings", "reg_runner.sweep.grid", "reg_runner.sweep.stacked", "reg_runner.sweep.jobs"}
    assert not heavy & imported, sorted(heavy & imported)
    imported = imports("model.dropuot=0.5", "the config has no key model.dropuot")
    assert "hydra" in imported and not {"pydantic", "reg_runner.schema", "reg_runner.config"} & imported


# values with a newline or another control character: shown escaped, so the message stays one line
ESCAPED_CASES = [
    (["notes=a\nb"], "notes=a\\nb is not allowed: Hydra cannot read it"),
    (["model.norm='x\ny'"], "model.norm='x\\ny' is not allowed: one of none, batchnorm, layernorm, rmsnorm"),
    (["data.root='/x\ty'"], "data.root='/x\\ty' is not a folder"),
    (["model.dropout=2", "tags=[a]", "notes='a\u2028b'"], "model.dropout=2 is not allowed: a number in [0, 1)"),
    (["--nope"], "unrecognized arguments: --nope"),  # Hydra's own parser: usage and message, made one line
    (["--cfg", "everything"], "argument --cfg/-c: invalid choice: 'everything'"),
]


@pytest.mark.parametrize("args,expected", ESCAPED_CASES, ids=[repr(c[0]) for c in ESCAPED_CASES])
def test_a_value_with_a_control_character_is_shown_escaped_on_one_line(cli, args, expected):
    proc = cli(*args, check=False, in_process=True)
    assert_one_line_error(proc, expected)
    assert proc.stderr.count("\n") == 1 and "\u2028" not in proc.stderr
    assert not proc.run_dir.exists()


def test_one_line_escapes_what_would_split_a_message():
    from reg_runner.errors import one_line

    assert one_line("a\nb\r\tc\x1b[31md\u2028e") == "a\\nb\\r\\tc\\x1b[31md\\u2028e"
    assert one_line("λ2 ± 0.1 → ok") == "λ2 ± 0.1 → ok"  # printable text as it is


def _benchmark(name: str):
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name).main


# every other entry point: its bad arguments in one line, exit 2 (argv, the entry point's main, the line)
ENTRY_POINT_CASES = [
    ("reg_runner.docs", ["--nope"], "unrecognized arguments: --nope (see python -m reg_runner.docs --help)"),
    ("reg_runner.data", ["nope"], "argument command: invalid choice: 'nope'"),
    ("reg_runner.data", ["import", "{tmp}/no\nwhere"], "{tmp}/no\\nwhere is not a folder"),
    ("reg_runner.landscape", ["{tmp}", "--grid", "2"], "argument --grid: '2' is not allowed: an odd integer in [3, "
     "201]"),
    ("reg_runner.landscape", ["{tmp}/no\nwhere"], "{tmp}/no\\nwhere is not a folder"),
    ("reg_runner.resume", ["{tmp}/no\nwhere"], "{tmp}/no\\nwhere is not a folder"),
    ("reg_runner.resume", [], "the following arguments are required: run_dir"),
    ("compare", ["--epochs", "0", "x"], "argument --epochs: '0' is not allowed: an integer >= 1"),
    ("compare", [], "the following arguments are required: variants"),
    ("refusal", ["--rounds", "0"], "argument --rounds: '0' is not allowed: an integer >= 1"),
    ("mutations", ["--timeout", "soon"], "argument --timeout: 'soon' is not allowed: an integer >= 1"),
    ("mutations", ["--nope"], "unrecognized arguments: --nope (see python benchmarks/mutations.py --help)"),
]


@pytest.mark.parametrize("entry,argv,expected", ENTRY_POINT_CASES, ids=[f"{c[0]} {c[1]!r}" for c in ENTRY_POINT_CASES])
def test_every_entry_points_bad_arguments_in_one_line(tmp_path, entry, argv, expected):
    """In this process, through each command's main (a benchmark's reads sys.argv; reg_runner.data's returns its
    exit code); the real processes of several are run by their own tests."""
    import importlib
    import os
    import sys

    from conftest import call_in_process

    argv = [a.format(tmp=tmp_path) for a in argv]
    if entry.startswith("reg_runner."):
        main = importlib.import_module(entry + (".__main__" if entry == "reg_runner.data" else "")).main
        command = lambda: sys.exit(main(argv))  # noqa: E731
    else:
        command = _benchmark(entry)
    before = sorted(tmp_path.iterdir())
    proc = call_in_process(command, [entry, *argv], tmp_path, dict(os.environ))
    assert_one_line_error(proc, expected.format(tmp=tmp_path))
    assert sorted(tmp_path.iterdir()) == before and proc.stdout == ""


@pytest.mark.parametrize("overrides,expected", [
    # the training subset is what the user changed: the batch the config sets is not theirs to blame
    ("data.train_fraction=0.01", "data.train_fraction=0.01 is not allowed: with it, trainer.batch_size=25 is not "
     "allowed: at most 5, the training images"),
    ("model.norm=batchnorm data.train_fraction=0.202", "model.norm='batchnorm' is not allowed: with it, "
     "trainer.batch_size=25 is not allowed: a size that leaves no batch of 1 image with model.norm=batchnorm"),
    ("optimizer.lr=1e-5 scheduler.name=cosine", None),  # not a conflict: cosine is chosen with scheduler=cosine
    ("trainer.epochs=1 scheduler=warmup_cosine", "scheduler.warmup_epochs=20 is not allowed: it must be fewer than "
     "trainer.epochs (1)"),  # both set by the user (the group brings the warmup): the rule's own key
    ("trainer.batch_size=30 trainer.accumulate=5", "trainer.accumulate=5 is not allowed: at most 4"),  # its own key
])
def test_a_conflict_names_the_key_the_user_set(tiny_data, overrides, expected):
    """A rule across keys blames the key the command line set, not one the config brought (the checks see only
    ``overrides`` as typed here; TINY's keys are the config's)."""
    message = rejection(overrides.split(), tiny_data)
    if expected is None:
        assert message is None or "with it" not in message, message
    else:
        assert message is not None and message.startswith(expected), message


def test_a_conflict_through_the_cli_names_the_key_the_user_set(cli):
    proc = cli(f"data.root={EMBEDDED}", "data.train_fraction=0.001", tiny=False, check=False, in_process=True)
    assert_one_line_error(proc, "data.train_fraction=0.001 is not allowed: with it, trainer.batch_size=300 is not "
                                "allowed: at most 60, the training images")
    assert not proc.run_dir.exists()


def test_an_exception_in_a_message_is_its_type_and_first_line_whatever_its_text():
    """``errors.cause``: what a one-line refusal says of an exception it caught. An exception without a message
    (``KeyError()``, an ``OSError`` raised bare) is its type, not an IndexError of its own; a URL's password is
    hidden; the first of several lines, cut at the limit."""
    from reg_runner.errors import cause, first_line

    assert cause(KeyError()) == "KeyError" and cause(OSError("  \n ")) == "OSError" and first_line(ValueError()) == ""
    assert cause(ValueError("no such column\nSQL: ...")) == "ValueError: no such column"
    assert cause(OSError("postgresql://me:secret@db/study refused"), 28) == "OSError: postgresql://me:***@db/study"
