"""Run names: short, readable handles such as ``brave-otter-42``.

Run ids are time-ordered (sorting by id is sorting by creation, which keyset
pagination relies on), so their first characters are shared by every run of
the same minute and make poor prefixes to type. Each run therefore also gets a
name, unique in its namespace, that people can read, say and type: an
adjective, an animal and a number. A name always has a letter that is not a
hex digit, so it is never mistaken for an id prefix. Creation makes a name
unique (a clash is retried with another); this module only makes candidates.
"""

from __future__ import annotations

import random


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ADJECTIVES = _words(
    """
    able agile amber ample azure bold brave breezy bright brisk calm candid careful cheery
    civil clever cosmic cozy crisp curious daring dapper deft eager early earnest easy
    elated epic exact fair fancy fast fearless fine firm fleet fond frank free fresh
    friendly frosty gentle giddy glad golden grand happy hardy hearty helpful honest humble
    jolly jovial joyful keen kind lively loyal lucid lucky merry mighty mellow modest neat
    nimble noble patient peppy plucky polite proud quick quiet radiant rapid ready regal
    robust rosy rustic savvy serene sharp shiny silent sincere sleek smart snappy snug solid
    sparkly speedy spry stable steady stellar stoic sturdy sunny swift tender thrifty tidy
    tranquil trusty upbeat valiant vivid warm wise witty zany zesty bubbly chipper dazzling
    dreamy fluffy gallant graceful jaunty lush mirthful
    """
)
ANIMALS = _words(
    """
    otter badger beaver bison bobcat camel caribou cheetah cobra condor cougar coyote crane
    cricket dingo dolphin donkey eagle egret falcon ferret finch flamingo fox gazelle gecko
    gibbon giraffe goose gopher gorilla grouse hare hawk hedgehog heron hippo hornet husky
    ibex ibis iguana impala jackal jaguar jay kestrel kiwi koala lark lemming lemur leopard
    lion llama lobster lynx macaw magpie mallard manatee marmot marten meerkat mink mole
    moose narwhal newt ocelot octopus opossum orca oriole osprey ostrich owl panda panther
    parrot pelican penguin petrel pigeon puffin puma quail rabbit raccoon raven reindeer
    robin salmon seal shark sheep shrew skunk sloth sparrow squid squirrel stoat stork swan
    tapir tern tiger toad toucan trout turtle urchin viper vole walrus weasel whale wolf
    wombat wren yak zebra alpaca antelope buffalo capybara chipmunk
    """
)

#: The longest run name stored.
MAX_RUN_NAME = 64

_random = random.Random()


def run_name(attempt: int = 0) -> str:
    """A candidate name: ``adjective-animal-NN``, with more digits on later
    ``attempt``s (0, 1, 2: two digits; then four; from 6 on, six), so a busy
    namespace that has used many two-digit names still finds a free one
    within a few tries."""
    digits = 2 if attempt < 3 else (4 if attempt < 6 else 6)
    number = _random.randrange(10 ** (digits - 1), 10**digits)
    return f"{_random.choice(ADJECTIVES)}-{_random.choice(ANIMALS)}-{number}"
